package intercept

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tpdev/tp/intercept/volume"
	"github.com/tpdev/tp/remote"
)

// runAsNeeds is what a refusal's hint says tp run --as takes.
const runAsNeeds = "tp run --as needs, in the workload's namespace: get on the workload (apps), get and list on " +
	"pods, get on configmaps and secrets (its environment and volumes), and create on serviceaccounts/token (its " +
	"service-account token): ClusterRole tp-intercept of tp's client-roles.yaml, bound there (kubectl create " +
	"rolebinding USER-tp-intercept --clusterrole=tp-intercept --user=USER -n NAMESPACE)"

// defaultTokenSeconds is a projected token's life when the pod does not say (the API's default).
const defaultTokenSeconds = 3600

// Volumes returns the files container of pod sees in its ConfigMap, Secret, downwardAPI and
// projected volumes, computed as the kubelet does (pkg/volume/{configmap,secret,downwardapi,
// projected}): all keys, or the items asked for with their paths and modes; defaultMode
// (0644 unless set); a missing optional object is an empty folder, a missing required one an
// error; subPath and subPathExpr mounts show the file or folder they name. Service-account
// tokens are fresh ones, requested with the TokenRequest API for the pod's ServiceAccount,
// bound to the pod as the kubelet's are, with the projection's audience and life; the
// service-account mount the API server adds to pods (token, ca.crt, namespace) is such a
// projected volume. An emptyDir is an empty folder; other volumes (persistent volume claims,
// host paths, ...) are not mounted: each mount has a report saying what was done.
func Volumes(ctx context.Context, cs kubernetes.Interface, pod *corev1.Pod, container string) (*volume.Tree, []volume.Report, error) {
	c, err := containerOf(pod, container)
	if err != nil {
		return nil, nil, err
	}
	v := &volumeReader{envResolver: newResolver(ctx, cs, pod, fmt.Sprintf("pod %q's volumes", pod.Name), runAsNeeds),
		container: c, tokens: map[string]string{}}
	vols := map[string]*corev1.Volume{}
	for i := range pod.Spec.Volumes {
		vols[pod.Spec.Volumes[i].Name] = &pod.Spec.Volumes[i]
	}
	tree := &volume.Tree{}
	var reports []volume.Report
	for _, m := range c.VolumeMounts {
		vol, ok := vols[m.Name]
		if !ok {
			return nil, nil, remote.Explain(remote.Cluster, fmt.Sprintf("container %q of pod %q mounts volume %q, which the pod does not have", c.Name, pod.Name, m.Name), "")
		}
		mount, rep, err := v.mount(vol, m)
		if err != nil {
			return nil, nil, fmt.Errorf("volume %s of pod %s: %w", vol.Name, pod.Name, err)
		}
		if mount != nil {
			tree.Mounts = append(tree.Mounts, *mount)
		}
		reports = append(reports, rep)
	}
	tree.Renew = v.renew
	return tree, reports, nil
}

// volumeReader reads one container's volumes, each object and token once.
type volumeReader struct {
	*envResolver
	container *corev1.Container
	// tokens are the tokens requested, by audience and life.
	tokens map[string]string
	renew  time.Time
	env    map[string]string
}

// mount is what the container sees at m: nil for a volume tp does not mount.
func (v *volumeReader) mount(vol *corev1.Volume, m corev1.VolumeMount) (*volume.Mount, volume.Report, error) {
	kind := volumeKind(vol)
	rep := volume.Report{Volume: vol.Name, Kind: kind, MountPath: m.MountPath}
	mount := &volume.Mount{Path: m.MountPath, Volume: vol.Name, Kind: kind, ReadOnly: true}
	var err error
	s := vol.VolumeSource
	switch {
	case s.ConfigMap != nil:
		mount.Files, rep.Done, err = v.configMapFiles(s.ConfigMap.Name, s.ConfigMap.Items, s.ConfigMap.DefaultMode, s.ConfigMap.Optional)
	case s.Secret != nil:
		mount.Files, rep.Done, err = v.secretFiles(s.Secret.SecretName, s.Secret.Items, s.Secret.DefaultMode, s.Secret.Optional)
	case s.DownwardAPI != nil:
		mount.Files, err = v.downwardFiles(s.DownwardAPI.Items, s.DownwardAPI.DefaultMode)
		rep.Done = "pod fields"
	case s.Projected != nil:
		mount.Files, rep.Done, err = v.projectedFiles(s.Projected)
		rep.Warning = strings.Contains(rep.Done, "not projected")
	case s.EmptyDir != nil:
		mount.Scratch, mount.ReadOnly, rep.Done = true, m.ReadOnly, "an empty folder"
	case s.PersistentVolumeClaim != nil:
		rep.Done, rep.Warning = fmt.Sprintf("not mounted: the data of persistent volume claim %s stays in the cluster", s.PersistentVolumeClaim.ClaimName), true
		return nil, rep, nil
	case s.HostPath != nil:
		rep.Done, rep.Warning = fmt.Sprintf("not mounted: host path %s is on the pod's node", s.HostPath.Path), true
		return nil, rep, nil
	default:
		rep.Done, rep.Warning = fmt.Sprintf("not mounted: tp does not copy %s volumes", kind), true
		return nil, rep, nil
	}
	if err != nil {
		return nil, rep, err
	}
	sub, err := v.subPath(m)
	if err != nil {
		return nil, rep, err
	}
	if sub != "" {
		mount.SubPath = sub
		mount.Files = subFiles(mount.Files, sub)
		rep.Done += ", subPath " + sub
	}
	return mount, rep, nil
}

// volumeKind is the volume's type as the pod spec names it (configMap, persistentVolumeClaim,
// ...): the one field of its source that is set.
func volumeKind(vol *corev1.Volume) string {
	b, err := json.Marshal(vol.VolumeSource)
	var fields map[string]json.RawMessage
	if err != nil || json.Unmarshal(b, &fields) != nil || len(fields) != 1 {
		return "unknown"
	}
	for k := range fields {
		return k
	}
	return "unknown"
}

// subPath is the part of the volume m shows, subPathExpr expanded with the container's
// environment as the kubelet does; "" for the whole volume.
func (v *volumeReader) subPath(m corev1.VolumeMount) (string, error) {
	sub := m.SubPath
	if m.SubPathExpr != "" {
		if v.env == nil {
			vars, err := Env(v.ctx, v.cs, v.pod, v.container.Name)
			if err != nil {
				return "", fmt.Errorf("subPathExpr %q: %w", m.SubPathExpr, err)
			}
			v.env = map[string]string{}
			for _, e := range vars {
				v.env[e.Name] = e.Value
			}
		}
		sub = expand(m.SubPathExpr, func(name string) (string, bool) { x, ok := v.env[name]; return x, ok })
	}
	if sub == "" {
		return "", nil
	}
	if clean := path.Clean(sub); path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", remote.Explain(remote.Usage, fmt.Sprintf("subPath %q of mount %s leaves its volume", sub, m.MountPath), "")
	}
	return path.Clean(sub), nil
}

// subFiles are the files at sub: the one file named so, or the folder's (none when sub does
// not exist: the kubelet then makes an empty folder).
func subFiles(files []volume.File, sub string) []volume.File {
	var out []volume.File
	for _, f := range files {
		switch {
		case f.Path == sub:
			f.Path = ""
			return []volume.File{f}
		case strings.HasPrefix(f.Path, sub+"/"):
			f.Path = strings.TrimPrefix(f.Path, sub+"/")
			out = append(out, f)
		}
	}
	return out
}

func fileMode(item, def *int32) fs.FileMode {
	switch {
	case item != nil:
		return fs.FileMode(*item).Perm()
	case def != nil:
		return fs.FileMode(*def).Perm()
	}
	return 0o644 // the API's default for every projection (corev1.*DefaultMode)
}

// keyFiles are the files of an object's keys: all of them, or items (key to path, with
// their modes). A missing item key fails unless the source is optional.
func keyFiles(what string, data map[string][]byte, items []corev1.KeyToPath, defaultMode *int32, opt *bool) ([]volume.File, error) {
	if items == nil {
		var out []volume.File
		for _, k := range sortedKeys(data) {
			out = append(out, volume.File{Path: k, Data: data[k], Mode: fileMode(nil, defaultMode)})
		}
		return out, nil
	}
	var out []volume.File
	for _, it := range items {
		b, ok := data[it.Key]
		if !ok && optional(opt) {
			continue
		}
		if !ok {
			return nil, &remote.Error{Kind: remote.Cluster, Msg: fmt.Sprintf("%s has no key %q, which the volume maps to %s", what, it.Key, it.Path),
				Hint: "the pod could not start like this today: fix the object or the workload"}
		}
		out = append(out, volume.File{Path: path.Clean(it.Path), Data: b, Mode: fileMode(it.Mode, defaultMode)})
	}
	return out, nil
}

func (v *volumeReader) configMapFiles(name string, items []corev1.KeyToPath, defaultMode *int32, opt *bool) ([]volume.File, string, error) {
	cm, err := v.configMap(name, opt)
	if err != nil || cm == nil {
		return nil, fmt.Sprintf("ConfigMap %s does not exist (optional): an empty folder", name), err
	}
	data := map[string][]byte{}
	for k, x := range cm.Data {
		data[k] = []byte(x)
	}
	for k, x := range cm.BinaryData {
		data[k] = x
	}
	files, err := keyFiles(fmt.Sprintf("ConfigMap %q in namespace %q", name, v.pod.Namespace), data, items, defaultMode, opt)
	return files, fmt.Sprintf("ConfigMap %s, %d files", name, len(files)), err
}

func (v *volumeReader) secretFiles(name string, items []corev1.KeyToPath, defaultMode *int32, opt *bool) ([]volume.File, string, error) {
	s, err := v.secret(name, opt)
	if err != nil || s == nil {
		return nil, fmt.Sprintf("Secret %s does not exist (optional): an empty folder", name), err
	}
	files, err := keyFiles(fmt.Sprintf("Secret %q in namespace %q", name, v.pod.Namespace), s.Data, items, defaultMode, opt)
	return files, fmt.Sprintf("Secret %s, %d files", name, len(files)), err
}

func (v *volumeReader) downwardFiles(items []corev1.DownwardAPIVolumeFile, defaultMode *int32) ([]volume.File, error) {
	var out []volume.File
	for _, it := range items {
		var x string
		var err error
		switch {
		case it.FieldRef != nil:
			x, err = fieldValue(v.pod, it.FieldRef)
			if err != nil {
				err = remote.Explain(remote.Usage, fmt.Sprintf("downward API file %s: %v", it.Path, err), "")
			}
		case it.ResourceFieldRef != nil:
			if x, err = v.resourceValue(v.container, it.ResourceFieldRef); err != nil {
				err = fmt.Errorf("downward API file %s: %w", it.Path, err)
			}
		default:
			err = remote.Explain(remote.Usage, fmt.Sprintf("downward API file %s takes its value from a source tp does not know", it.Path), "")
		}
		if err != nil {
			return nil, err
		}
		out = append(out, volume.File{Path: path.Clean(it.Path), Data: []byte(x), Mode: fileMode(it.Mode, defaultMode)})
	}
	return out, nil
}

// projectedFiles are the files of every source of a projected volume; a source tp cannot
// make (cluster trust bundles, pod certificates) is named in the report as not projected.
func (v *volumeReader) projectedFiles(p *corev1.ProjectedVolumeSource) ([]volume.File, string, error) {
	var out []volume.File
	var done, skipped []string
	for _, src := range p.Sources {
		var files []volume.File
		var what string
		var err error
		switch {
		case src.ConfigMap != nil:
			files, what, err = v.configMapFiles(src.ConfigMap.Name, src.ConfigMap.Items, p.DefaultMode, src.ConfigMap.Optional)
		case src.Secret != nil:
			files, what, err = v.secretFiles(src.Secret.Name, src.Secret.Items, p.DefaultMode, src.Secret.Optional)
		case src.DownwardAPI != nil:
			files, err = v.downwardFiles(src.DownwardAPI.Items, p.DefaultMode)
			what = "pod fields"
		case src.ServiceAccountToken != nil:
			var tok string
			tok, err = v.token(src.ServiceAccountToken)
			files = []volume.File{{Path: path.Clean(src.ServiceAccountToken.Path), Data: []byte(tok), Mode: fileMode(nil, p.DefaultMode)}}
			what = "a token of ServiceAccount " + v.serviceAccount()
		case src.ClusterTrustBundle != nil:
			skipped = append(skipped, "cluster trust bundle "+src.ClusterTrustBundle.Path)
			continue
		default:
			skipped = append(skipped, "a source tp does not know")
			continue
		}
		if err != nil {
			return nil, "", err
		}
		out = append(out, files...)
		done = append(done, what)
	}
	s := strings.Join(done, " + ")
	if len(skipped) > 0 {
		s += "; not projected: " + strings.Join(skipped, ", ")
	}
	return out, s, nil
}

func (v *volumeReader) serviceAccount() string {
	switch {
	case v.pod.Spec.ServiceAccountName != "":
		return v.pod.Spec.ServiceAccountName
	case v.pod.Spec.DeprecatedServiceAccount != "":
		return v.pod.Spec.DeprecatedServiceAccount
	}
	return "default"
}

// token requests a token for the pod's ServiceAccount, bound to the pod as the kubelet's are
// (it dies with the pod, and says which pod it is for).
func (v *volumeReader) token(p *corev1.ServiceAccountTokenProjection) (string, error) {
	seconds := int64(defaultTokenSeconds)
	if p.ExpirationSeconds != nil {
		seconds = *p.ExpirationSeconds
	}
	key := fmt.Sprintf("%s/%d", p.Audience, seconds)
	if tok, ok := v.tokens[key]; ok {
		return tok, nil
	}
	req := &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{
		ExpirationSeconds: &seconds,
		BoundObjectRef:    &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: v.pod.Name, UID: v.pod.UID},
	}}
	if p.Audience != "" {
		req.Spec.Audiences = []string{p.Audience}
	}
	sa := v.serviceAccount()
	start := time.Now()
	got, err := v.cs.CoreV1().ServiceAccounts(v.pod.Namespace).CreateToken(v.ctx, sa, req, metav1.CreateOptions{})
	if apierrors.IsNotFound(err) {
		return "", &remote.Error{Kind: remote.Cluster, Err: err, Msg: fmt.Sprintf("the ServiceAccount %q in namespace %q, whose token %s holds, does not exist", sa, v.pod.Namespace, v.reader),
			Hint: "the pod could not start like this today: create the ServiceAccount or fix the workload"}
	}
	if err != nil {
		return "", v.apiError("create", "serviceaccounts/token", v.pod.Namespace, sa, err)
	}
	// The kubelet renews at 80% of the token's life.
	expires := got.Status.ExpirationTimestamp.Time
	if expires.IsZero() {
		expires = start.Add(time.Duration(seconds) * time.Second)
	}
	renew := start.Add(expires.Sub(start) * 8 / 10)
	if v.renew.IsZero() || renew.Before(v.renew) {
		v.renew = renew
	}
	v.tokens[key] = got.Status.Token
	return got.Status.Token, nil
}
