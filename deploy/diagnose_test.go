package deploy

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tpdev/tp/remote"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const testImage = "localhost/tp/tp:v1"

// managerPod is a manager pod with the given container status (nil: none yet).
func managerPod(name string, cs *corev1.ContainerStatus, conds ...corev1.PodCondition) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "tp-system", Labels: map[string]string{"app.kubernetes.io/name": ManagerName}},
		Spec:       corev1.PodSpec{NodeName: "node1", Containers: []corev1.Container{{Name: ManagerContainer, Image: testImage}}},
		Status:     corev1.PodStatus{Phase: corev1.PodPending, Conditions: conds},
	}
	if cs != nil {
		cs.Name = ManagerContainer
		p.Status.Phase = corev1.PodRunning
		p.Status.ContainerStatuses = []corev1.ContainerStatus{*cs}
	}
	return p
}

func waiting(reason, msg string) *corev1.ContainerStatus {
	return &corev1.ContainerStatus{State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}}
}

func readyCond(ok bool) corev1.PodCondition {
	s := corev1.ConditionFalse
	if ok {
		s = corev1.ConditionTrue
	}
	return corev1.PodCondition{Type: corev1.PodReady, Status: s}
}

func TestJudgePodImageProblemsFailFast(t *testing.T) {
	for _, reason := range []string{"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull"} {
		v := judgePod(managerPod("p", waiting(reason, `failed to pull "localhost/tp/tp:v1": not found`)))
		if v.fail == nil || v.fail.Kind != remote.Image || v.ready {
			t.Fatalf("%s: verdict %+v", reason, v)
		}
		msg := v.fail.Error()
		for _, want := range []string{`the manager image "localhost/tp/tp:v1" is not available`, reason, "node1", "not found",
			"make cluster-load TAR=bin/images/tp.tar", "kind load image-archive", "--image"} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: %q does not say %q", reason, msg, want)
			}
		}
		if !v.fail.Kind.UserFault() {
			t.Errorf("%s: a missing image is the user's to fix", reason)
		}
	}
	v := judgePod(managerPod("p", waiting("InvalidImageName", `couldn't parse image name "A:b"`)))
	if v.fail == nil || v.fail.Kind != remote.Image || !strings.Contains(v.fail.Error(), "not a valid image name") {
		t.Fatalf("InvalidImageName: %+v", v)
	}
}

func TestJudgePodCrashes(t *testing.T) {
	started := metav1.NewTime(time.Now().Add(-3 * time.Second))
	finished := metav1.NewTime(time.Now())
	for _, tc := range []struct {
		name         string
		cs           *corev1.ContainerStatus
		previousLogs bool
		wants        []string
	}{
		{
			name: "back-off after exit 2",
			cs: &corev1.ContainerStatus{
				RestartCount:         3,
				State:                corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 2, Reason: "Error", StartedAt: started, FinishedAt: finished}},
			},
			previousLogs: true,
			wants:        []string{`container "manager" of pod p exited with code 2 (Error)`, "restarts: 3", "it ran for 3s"},
		},
		{
			name: "first exit, not restarted yet",
			cs: &corev1.ContainerStatus{
				State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error", Message: "panic: boom\n"}},
			},
			wants: []string{"exited with code 1", "restarts: 0", "termination message:", "| panic: boom"},
		},
		{
			name: "restarted and running again",
			cs: &corev1.ContainerStatus{
				RestartCount:         1,
				State:                corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "Error"}},
			},
			previousLogs: true,
			wants:        []string{"was killed (exit code 137, Error)"},
		},
		{
			name: "out of memory",
			cs: &corev1.ContainerStatus{
				RestartCount:         1,
				State:                corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled"}},
			},
			previousLogs: true,
			wants:        []string{"more memory than its limit", "OOMKilled"},
		},
		{
			name:         "back-off with no termination recorded",
			cs:           waiting("CrashLoopBackOff", "back-off 10s restarting failed container"),
			previousLogs: true,
			wants:        []string{"keeps crashing", "CrashLoopBackOff"},
		},
	} {
		v := judgePod(managerPod("p", tc.cs))
		if v.fail == nil || v.fail.Kind != remote.Crash || !v.crashed || v.previousLogs != tc.previousLogs {
			t.Errorf("%s: verdict %+v (fail %v)", tc.name, v, v.fail)
			continue
		}
		if v.fail.Kind.UserFault() {
			t.Errorf("%s: a crashing manager is not the user's fault", tc.name)
		}
		for _, want := range tc.wants {
			if !strings.Contains(v.fail.Error(), want) {
				t.Errorf("%s: %q does not say %q", tc.name, v.fail.Error(), want)
			}
		}
	}
}

func TestWithLogsShowsTheTail(t *testing.T) {
	v := judgePod(managerPod("p", &corev1.ContainerStatus{
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Message: "from the termination message"}},
	}))
	var lines []string
	for i := range 30 {
		lines = append(lines, "line "+string(rune('a'+i%26)))
	}
	withLogs(v.fail, strings.Join(lines, "\n")+"\n", nil)
	d := v.fail.Detail
	if strings.Contains(d, "termination message") || strings.Count(d, "| line") != logTail || !strings.Contains(d, "| line d\n") {
		t.Fatalf("detail with logs:\n%s", d)
	}

	v = judgePod(managerPod("p", &corev1.ContainerStatus{
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Message: "from the termination message"}},
	}))
	withLogs(v.fail, "", errors.New("pods/log is forbidden"))
	if d := v.fail.Detail; !strings.Contains(d, "| from the termination message") || !strings.Contains(d, "logs could not be read: pods/log is forbidden") {
		t.Fatalf("detail without logs:\n%s", d)
	}
	// Each detail line is indented under the message.
	if !strings.Contains(v.fail.Error(), "\n  | from the termination message") {
		t.Fatalf("error text:\n%s", v.fail.Error())
	}
}

func TestJudgePodWaitsForWhatHealsByItself(t *testing.T) {
	unschedulable := corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable",
		Message: "0/1 nodes are available: 1 Insufficient memory."}
	for _, tc := range []struct {
		name  string
		pod   *corev1.Pod
		ready bool
		want  string
	}{
		{"unscheduled", managerPod("p", nil, unschedulable), false, "not scheduled: Unschedulable: 0/1 nodes are available: 1 Insufficient memory."},
		{"new", managerPod("p", nil), false, "container not created yet"},
		{"creating", managerPod("p", waiting("ContainerCreating", "")), false, "container ContainerCreating"},
		{"running, probe failing", managerPod("p", &corev1.ContainerStatus{State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}, readyCond(false)),
			false, "readiness probe (GET /readyz on port 8082) does not pass yet"},
		{"ready", managerPod("p", &corev1.ContainerStatus{Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}, readyCond(true)), true, "is ready"},
	} {
		v := judgePod(tc.pod)
		if v.fail != nil || v.ready != tc.ready || !strings.Contains(v.state, tc.want) {
			t.Errorf("%s: verdict %+v, want state with %q", tc.name, v, tc.want)
		}
	}
	p := managerPod("p", &corev1.ContainerStatus{Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}, readyCond(true))
	p.DeletionTimestamp = new(metav1.Now())
	if v := judgePod(p); v.ready || !strings.Contains(v.state, "terminating") {
		t.Errorf("terminating pod: %+v", v)
	}
}

func TestJudgePodContainerThatCannotStart(t *testing.T) {
	v := judgePod(managerPod("p", waiting("CreateContainerConfigError", "container has runAsNonRoot and image will run as root")))
	if v.fail == nil || v.fail.Kind != remote.Cluster || !strings.Contains(v.fail.Error(), "runAsNonRoot") || !strings.Contains(v.fail.Error(), "describe pod p") {
		t.Fatalf("verdict %+v: %v", v, v.fail)
	}
}

func TestDescribePod(t *testing.T) {
	p := managerPod("p", waiting("ContainerCreating", ""), corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}, readyCond(false))
	p.Status.ContainerStatuses[0].RestartCount = 2
	got := describePod(p)
	want := "pod p: Running; Ready=False; container manager waiting (ContainerCreating), restarts 2"
	if got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}

func TestWarningEvents(t *testing.T) {
	now := time.Now()
	ev := func(typ, kind, name, reason string, ago time.Duration, count int32) corev1.Event {
		return corev1.Event{
			Type: typ, Reason: reason, Message: reason + " happened", Count: count,
			InvolvedObject: corev1.ObjectReference{Kind: kind, Name: name},
			LastTimestamp:  metav1.NewTime(now.Add(-ago)),
		}
	}
	events := []corev1.Event{
		ev("Warning", "Pod", "p", "BackOff", time.Second, 4),
		ev("Normal", "Pod", "p", "Pulled", 2*time.Second, 1),
		ev("Warning", "Pod", "someone-else", "Failed", time.Second, 1),
		ev("Warning", "Pod", "p", "FailedScheduling", 30*time.Second, 1),
		ev("Warning", "ReplicaSet", "rs", "FailedCreate", 10*time.Second, 1),
	}
	got := warningEvents(events, map[string]bool{"Pod/p": true, "ReplicaSet/rs": true}, 2, now)
	want := []string{"FailedCreate replicaset/rs: FailedCreate happened, 10s ago", "BackOff pod/p: BackOff happened (x4), 1s ago"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}
