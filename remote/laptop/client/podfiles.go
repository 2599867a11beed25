package client

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tpdev/tp/intercept"
	"github.com/tpdev/tp/intercept/volume"
	"github.com/tpdev/tp/netstack/ns"
	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/laptop/control"
)

// RootEnv names the folder that holds the workload's files for tp run --as: each volume
// mount of the container at $TP_ROOT + its mountPath.
const RootEnv = "TP_ROOT"

// retryRenew is how long a failed renewal of the files' tokens waits before the next try.
const retryRenew = 30 * time.Second

// podFilesPoll is how often the ConfigMaps and Secrets a container mounts are read again:
// an update shows in the files within it, as the kubelet's sync shows it in a pod.
const podFilesPoll = 2 * time.Second

// podFiles are a container's volumes written under a temporary root and kept current
// until Close, which removes them.
type podFiles struct {
	Root    string
	mounts  []ns.Mount // each mount under Root at its real path
	cancel  context.CancelFunc
	done    chan struct{}
	removed sync.Once
}

// writePodFiles writes the volumes of a container of a ready pod of ref (the named one, else
// the one serving target's port, else the pod's default) under a new temporary folder, says
// on w what was done about each mount, and keeps them current: ConfigMap and Secret updates
// within podFilesPoll, tokens before they expire.
func writePodFiles(ctx context.Context, w io.Writer, cs kubernetes.Interface, ref intercept.Ref, target *intercept.Target, container string, log *slog.Logger) (*podFiles, error) {
	pod, err := intercept.PodOf(ctx, cs, ref)
	if err != nil {
		return nil, err
	}
	container = chosenContainer(pod, target, container)
	// The versions are read before the files: an update in between is seen as one.
	seen := sourceVersions(ctx, cs, pod)
	tree, reports, err := intercept.Volumes(ctx, cs, pod, container)
	if err != nil {
		return nil, err
	}
	sweepRoots(os.TempDir(), log)
	// The folder is named after this process, so that a later tp can remove it if this one
	// is killed before it does (it holds secrets and live tokens).
	root, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", rootPrefix, os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("a folder for %s's files: %w", ref, err)
	}
	if err := tree.WriteTo(root); err != nil {
		_ = volume.Remove(root)
		return nil, fmt.Errorf("writing %s's files: %w", ref, err)
	}
	fmt.Fprintf(w, "tp: %s's files (pod %s) are under $%s=%s:\n", ref, pod.Name, RootEnv, root)
	for _, r := range reports {
		mark := " "
		if r.Warning {
			mark = "!"
		}
		fmt.Fprintf(w, "  %s %s (%s %s): %s\n", mark, r.MountPath, r.Kind, r.Volume, r.Done)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f := &podFiles{Root: root, cancel: cancel, done: make(chan struct{})}
	for _, m := range tree.Mounts {
		f.mounts = append(f.mounts, ns.Mount{Source: filepath.Join(root, filepath.FromSlash(m.Path)), Target: m.Path, ReadOnly: m.ReadOnly})
	}
	go func() {
		defer close(f.done)
		keepCurrent(ctx, cs, ref, pod, container, seen, tree.Renew, root, log)
	}()
	return f, nil
}

// rootPrefix starts the name of every $TP_ROOT, followed by the pid of the tp that made it.
const rootPrefix = "tp-root-"

// sweepRoots removes the roots in dir that tps no longer running left (killed before they
// could): others' folders are not this user's to remove, and removing them fails quietly.
func sweepRoots(dir string, log *slog.Logger) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), rootPrefix)
		pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
		if !ok || !e.IsDir() || err != nil || pid == os.Getpid() || control.Alive(pid) {
			continue
		}
		if err := volume.Remove(filepath.Join(dir, e.Name())); err == nil {
			log.Info("removed the workload's files a killed tp left", "folder", e.Name())
		}
	}
}

// keepCurrent writes the tree again when an object it came from changes (their
// resourceVersions, seen when it was written and read again every podFilesPoll), when a token
// in it is due for renewal (at renew), or when the pod is gone: its tokens are bound to it
// and die with it (a rollout), so the files are then those of another ready pod of ref.
func keepCurrent(ctx context.Context, cs kubernetes.Interface, ref intercept.Ref, pod *corev1.Pod, container string, seen []string, renew time.Time, root string, log *slog.Logger) {
	remote.Every(ctx, podFilesPoll, func(now time.Time) bool {
		current, gone := podNow(ctx, cs, pod)
		pod = current
		if gone {
			next, err := intercept.PodOf(ctx, cs, ref)
			if err != nil {
				if ctx.Err() == nil {
					log.Warn("the workload's pod is gone and no other is ready: its files keep the old tokens", "pod", pod.Name, "err", err)
				}
				return true
			}
			log.Info("the workload's pod was replaced: its files are the new pod's", "old", pod.Name, "new", next.Name)
			pod, seen = next, nil
		}
		versions := sourceVersions(ctx, cs, pod)
		if slices.Equal(versions, seen) && (renew.IsZero() || now.Before(renew)) {
			return true
		}
		next, _, err := intercept.Volumes(ctx, cs, pod, container)
		if err == nil {
			err = next.WriteTo(root)
		}
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("the workload's files are not updated", "err", err)
			}
			// Tried again on the next change, or a little later for a token due: not on
			// every tick (each try requests tokens).
			seen = versions
			if !renew.IsZero() && !now.Before(renew) {
				renew = now.Add(retryRenew)
			}
			return true
		}
		seen, renew = versions, next.Renew
		return true
	})
}

// podNow is pod as it is now (its labels and annotations may have changed), and whether it
// was deleted (or is being), or replaced by another of its name.
func podNow(ctx context.Context, cs kubernetes.Interface, pod *corev1.Pod) (*corev1.Pod, bool) {
	now, err := cs.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{ResourceVersion: "0"})
	switch {
	case apierrors.IsNotFound(err):
		return pod, true
	case err != nil:
		return pod, false
	case now.UID != pod.UID || now.DeletionTimestamp != nil:
		return pod, true
	}
	return now, false
}

// sourceVersions are the resourceVersions of the ConfigMaps and Secrets pod's volumes name ("-"
// for one that cannot be read, so that its coming back counts as a change).
func sourceVersions(ctx context.Context, cs kubernetes.Interface, pod *corev1.Pod) []string {
	var out []string
	// The pod's labels and annotations: its downwardAPI files show them.
	out = append(out, fmt.Sprint("pod ", pod.Labels, pod.Annotations))
	seen := map[string]bool{}
	get := func(kind, name string) {
		if seen[kind+"/"+name] {
			return
		}
		seen[kind+"/"+name] = true
		var (
			meta metav1.Object
			err  error
		)
		// ResourceVersion "0": the API server's cache answers, not etcd.
		opts := metav1.GetOptions{ResourceVersion: "0"}
		if kind == "configmap" {
			meta, err = cs.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, name, opts)
		} else {
			meta, err = cs.CoreV1().Secrets(pod.Namespace).Get(ctx, name, opts)
		}
		v := "-"
		if err == nil {
			v = meta.GetResourceVersion()
		}
		out = append(out, kind+"/"+name+"@"+v)
	}
	for _, v := range pod.Spec.Volumes {
		switch {
		case v.ConfigMap != nil:
			get("configmap", v.ConfigMap.Name)
		case v.Secret != nil:
			get("secret", v.Secret.SecretName)
		case v.Projected != nil:
			for _, s := range v.Projected.Sources {
				switch {
				case s.ConfigMap != nil:
					get("configmap", s.ConfigMap.Name)
				case s.Secret != nil:
					get("secret", s.Secret.Name)
				}
			}
		}
	}
	return out
}

// VIFMounts show the files at their real paths in the VIF's namespace: every mount the
// namespace can take, the others (a new folder right under /) said on w to stay under
// $TP_ROOT only.
func (f *podFiles) VIFMounts(w io.Writer) []ns.Mount {
	var out []ns.Mount
	for _, m := range f.mounts {
		if err := ns.Placeable(m); err != nil {
			fmt.Fprintf(w, "tp: in the VIF, %s is under $%s only: %v\n", m.Target, RootEnv, err)
			continue
		}
		out = append(out, m)
	}
	return out
}

// Close stops the updates and removes the files.
func (f *podFiles) Close() error {
	f.cancel()
	<-f.done
	var err error
	f.removed.Do(func() { err = volume.Remove(f.Root) })
	return err
}
