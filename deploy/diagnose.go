package deploy

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tpdev/tp/remote"
	corev1 "k8s.io/api/core/v1"
)

// logTail is how many log lines of a crashed manager an error shows.
const logTail = 20

// imageReasons are the kubelet's reasons for a container that waits for an image it cannot
// get. None of them heals by waiting, so install fails at once.
var imageReasons = []string{
	"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
	"ImageInspectError", "RegistryUnavailable", "SignatureValidationFailed",
}

// startReasons are the kubelet's reasons for a container it cannot create or start: the
// pod's spec or the image is at odds with the node, which waiting does not fix either.
var startReasons = []string{"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}

// imageHint says how to make an image available to a cluster that has none of tp's images.
const imageHint = "load it into the cluster's nodes (tp's test cluster: make cluster-load TAR=bin/images/tp.tar; " +
	"kind: kind load image-archive bin/images/tp.tar), push it to a registry the nodes can pull from, " +
	"or pass --image with an image they have"

// podVerdict is what one manager pod says about the rollout.
type podVerdict struct {
	ready bool
	state string        // one line: what the pod is doing, for progress and timeout messages
	fail  *remote.Error // non-nil: the rollout cannot succeed, stop waiting
	// previousLogs, for a crash, says whether the logs that explain it are those of the
	// previous instance of the container (it was restarted) or of the current one.
	crashed, previousLogs bool
}

// judgePod reads a manager pod's status. It is pure: the caller fetches the logs of a crash.
func judgePod(pod *corev1.Pod) podVerdict {
	if pod.DeletionTimestamp != nil {
		return podVerdict{state: fmt.Sprintf("pod %s is terminating", pod.Name)}
	}
	image := ""
	for _, c := range pod.Spec.Containers {
		if c.Name == ManagerContainer {
			image = c.Image
		}
	}
	var cs *corev1.ContainerStatus
	for i := range pod.Status.ContainerStatuses {
		if pod.Status.ContainerStatuses[i].Name == ManagerContainer {
			cs = &pod.Status.ContainerStatuses[i]
		}
	}
	if podReady(pod) && cs != nil && cs.State.Running != nil {
		return podVerdict{ready: true, state: fmt.Sprintf("pod %s is ready", pod.Name)}
	}
	if cs == nil {
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
				return podVerdict{state: fmt.Sprintf("pod %s is not scheduled: %s", pod.Name, reasonMessage(c.Reason, c.Message))}
			}
		}
		return podVerdict{state: fmt.Sprintf("pod %s is %s, its container not created yet", pod.Name, cmp.Or(string(pod.Status.Phase), "new"))}
	}

	if w := cs.State.Waiting; w != nil && slices.Contains(imageReasons, w.Reason) {
		e := &remote.Error{
			Kind: remote.Image,
			Msg:  fmt.Sprintf("the manager image %q is not available to the cluster's node %s (%s)", image, pod.Spec.NodeName, w.Reason),
			Hint: imageHint,
		}
		if w.Reason == "InvalidImageName" {
			e.Msg = fmt.Sprintf("the manager image %q is not a valid image name (%s)", image, w.Reason)
			e.Hint = "pass --image with a valid image reference, like registry.example.com/tp/tp:v1.2.3"
		}
		if w.Message != "" {
			e.Err = errors.New(w.Message)
		}
		return podVerdict{state: fmt.Sprintf("pod %s: %s", pod.Name, w.Reason), fail: e}
	}

	// A crash: the container ended (any exit: the manager is a server and must not), or it
	// was restarted, or the kubelet holds it in back-off.
	term, previous := cs.State.Terminated, false
	if term == nil && cs.RestartCount > 0 && cs.LastTerminationState.Terminated != nil {
		term, previous = cs.LastTerminationState.Terminated, true
	}
	backoff := cs.State.Waiting != nil && cs.State.Waiting.Reason == "CrashLoopBackOff"
	if term != nil || backoff {
		return crashVerdict(pod, cs, term, previous || (term == nil && backoff))
	}

	if w := cs.State.Waiting; w != nil && slices.Contains(startReasons, w.Reason) {
		e := &remote.Error{
			Kind: remote.Cluster,
			Msg:  fmt.Sprintf("the node cannot start the manager's container in pod %s (%s)", pod.Name, w.Reason),
			Hint: fmt.Sprintf("the image %q or the cluster's policies do not fit the pod's spec: kubectl -n %s describe pod %s", image, pod.Namespace, pod.Name),
		}
		if w.Message != "" {
			e.Err = errors.New(w.Message)
		}
		return podVerdict{state: fmt.Sprintf("pod %s: %s", pod.Name, w.Reason), fail: e}
	}

	switch {
	case cs.State.Waiting != nil:
		return podVerdict{state: fmt.Sprintf("pod %s: container %s", pod.Name, reasonMessage(cs.State.Waiting.Reason, cs.State.Waiting.Message))}
	case cs.State.Running != nil:
		return podVerdict{state: fmt.Sprintf("pod %s is running but not ready: its readiness probe (GET /readyz on port %d) does not pass yet", pod.Name, ClusterPort)}
	}
	return podVerdict{state: fmt.Sprintf("pod %s is %s", pod.Name, pod.Status.Phase)}
}

func crashVerdict(pod *corev1.Pod, cs *corev1.ContainerStatus, term *corev1.ContainerStateTerminated, previous bool) podVerdict {
	e := &remote.Error{
		Kind: remote.Crash,
		Hint: "the image must be tp's cluster image of this tp's version (tp version prints it); " +
			"if it is, this is a bug in tp: report it with the lines below",
	}
	var detail strings.Builder
	switch {
	case term == nil:
		e.Msg = fmt.Sprintf("the manager keeps crashing: container %q of pod %s is in CrashLoopBackOff", ManagerContainer, pod.Name)
	case term.Reason == "OOMKilled":
		e.Msg = fmt.Sprintf("the manager was killed for using more memory than its limit: container %q of pod %s (OOMKilled, exit code %d)", ManagerContainer, pod.Name, term.ExitCode)
	case term.Signal != 0 || term.ExitCode > 128:
		e.Msg = fmt.Sprintf("the manager crashed: container %q of pod %s was killed (exit code %d, %s)", ManagerContainer, pod.Name, term.ExitCode, cmp.Or(term.Reason, "signal"))
	default:
		e.Msg = fmt.Sprintf("the manager crashed: container %q of pod %s exited with code %d (%s)", ManagerContainer, pod.Name, term.ExitCode, cmp.Or(term.Reason, "exited"))
	}
	fmt.Fprintf(&detail, "restarts: %d", cs.RestartCount)
	if term != nil && !term.StartedAt.IsZero() && !term.FinishedAt.IsZero() {
		if ran := term.FinishedAt.Sub(term.StartedAt.Time); ran < time.Second {
			detail.WriteString("; it ran for less than a second")
		} else {
			fmt.Fprintf(&detail, "; it ran for %s", ran.Round(time.Second))
		}
	}
	detail.WriteString("\n")
	e.Detail = detail.String()
	v := podVerdict{state: fmt.Sprintf("pod %s: crashed", pod.Name), fail: e, crashed: true, previousLogs: previous}
	// Until logs are added, the termination message (the log tail, with FallbackToLogsOnError)
	// is the best evidence.
	if term != nil && strings.TrimSpace(term.Message) != "" {
		e.Detail += "termination message:\n" + indentTail(term.Message, logTail)
	}
	return v
}

// withLogs puts the crashed container's log tail (or why it is missing) in e's detail, in
// place of the termination message.
func withLogs(e *remote.Error, logs string, err error) {
	head, _, _ := strings.Cut(e.Detail, "termination message:\n")
	switch {
	case err != nil:
		e.Detail += fmt.Sprintf("(its logs could not be read: %v)\n", err)
	case strings.TrimSpace(logs) == "":
		e.Detail = head + "it wrote no log lines\n"
	default:
		e.Detail = head + fmt.Sprintf("last log lines (up to %d):\n", logTail) + indentTail(logs, logTail)
	}
}

// indentTail is the last n lines of s, each behind "| ".
func indentTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	var b strings.Builder
	for _, l := range lines {
		b.WriteString("| ")
		b.WriteString(l)
		b.WriteString("\n")
	}
	return b.String()
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func reasonMessage(reason, message string) string {
	switch {
	case reason == "":
		return message
	case message == "":
		return reason
	}
	return reason + ": " + message
}

// describePod is one line on a pod's status for timeout messages.
func describePod(pod *corev1.Pod) string {
	var b strings.Builder
	fmt.Fprintf(&b, "pod %s: %s", pod.Name, cmp.Or(string(pod.Status.Phase), "no phase yet"))
	if pod.DeletionTimestamp != nil {
		b.WriteString(", terminating")
	}
	for _, c := range pod.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			fmt.Fprintf(&b, "; %s=%s", c.Type, c.Status)
			if rm := reasonMessage(c.Reason, c.Message); rm != "" {
				fmt.Fprintf(&b, " (%s)", rm)
			}
		}
	}
	for _, cs := range pod.Status.ContainerStatuses {
		fmt.Fprintf(&b, "; container %s ", cs.Name)
		switch s := cs.State; {
		case s.Waiting != nil:
			fmt.Fprintf(&b, "waiting (%s)", reasonMessage(s.Waiting.Reason, s.Waiting.Message))
		case s.Running != nil:
			fmt.Fprintf(&b, "running, ready=%t", cs.Ready)
		case s.Terminated != nil:
			fmt.Fprintf(&b, "terminated (%s, exit code %d)", s.Terminated.Reason, s.Terminated.ExitCode)
		default:
			b.WriteString("in no known state")
		}
		if cs.RestartCount > 0 {
			fmt.Fprintf(&b, ", restarts %d", cs.RestartCount)
		}
	}
	return b.String()
}

// warningEvents are the last max Warning events about the named objects (kind/name), oldest
// first, one line each.
func warningEvents(events []corev1.Event, objects map[string]bool, max int, now time.Time) []string {
	var picked []corev1.Event
	for _, ev := range events {
		if ev.Type == corev1.EventTypeWarning && objects[ev.InvolvedObject.Kind+"/"+ev.InvolvedObject.Name] {
			picked = append(picked, ev)
		}
	}
	slices.SortStableFunc(picked, func(a, b corev1.Event) int { return eventTime(a).Compare(eventTime(b)) })
	if len(picked) > max {
		picked = picked[len(picked)-max:]
	}
	lines := make([]string, 0, len(picked))
	for _, ev := range picked {
		line := fmt.Sprintf("%s %s/%s: %s", ev.Reason, strings.ToLower(ev.InvolvedObject.Kind), ev.InvolvedObject.Name, strings.TrimSpace(ev.Message))
		if ev.Count > 1 {
			line += fmt.Sprintf(" (x%d)", ev.Count)
		}
		if t := eventTime(ev); !t.IsZero() {
			line += fmt.Sprintf(", %s ago", now.Sub(t).Round(time.Second))
		}
		lines = append(lines, line)
	}
	return lines
}

func eventTime(ev corev1.Event) time.Time {
	switch {
	case !ev.LastTimestamp.IsZero():
		return ev.LastTimestamp.Time
	case !ev.EventTime.IsZero():
		return ev.EventTime.Time
	}
	return ev.CreationTimestamp.Time
}
