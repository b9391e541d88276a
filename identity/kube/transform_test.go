package kube

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestFinishedAtThroughTransform: the informer transform keeps when a
// finished pod finished (the last container's finishedAt, else the last
// condition transition) and nothing else of its statuses.
func TestFinishedAtThroughTransform(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(s int) metav1.Time { return metav1.NewTime(t0.Add(time.Duration(s) * time.Second)) }
	terminated := func(s int) corev1.ContainerStatus {
		return corev1.ContainerStatus{Name: "c", Image: "i", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{FinishedAt: at(s), Message: "long"}}}
	}
	conds := []corev1.PodCondition{{Type: corev1.PodReady, LastTransitionTime: at(30)}, {Type: corev1.PodScheduled, LastTransitionTime: at(1)}}
	for _, tc := range []struct {
		name   string
		status corev1.PodStatus
		want   time.Time
	}{
		{"running", corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{terminated(9)}, Conditions: conds}, time.Time{}},
		{"succeeded: last container", corev1.PodStatus{Phase: corev1.PodSucceeded, ContainerStatuses: []corev1.ContainerStatus{terminated(9), terminated(12)}, Conditions: conds}, t0.Add(12 * time.Second)},
		{"failed: conditions without container times", corev1.PodStatus{Phase: corev1.PodFailed, Conditions: conds}, t0.Add(30 * time.Second)},
		{"succeeded: no time known", corev1.PodStatus{Phase: corev1.PodSucceeded}, time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &corev1.Pod{Status: tc.status}
			assert.True(t, finishedAt(p).Equal(tc.want), "full pod: %v", finishedAt(p))
			out, err := transform(p)
			assert.NoError(t, err)
			trimmed := out.(*corev1.Pod)
			assert.True(t, finishedAt(trimmed).Equal(tc.want), "trimmed pod: %v", finishedAt(trimmed))
			assert.Empty(t, trimmed.Status.Conditions)
			assert.LessOrEqual(t, len(trimmed.Status.ContainerStatuses), 1)
			if !tc.want.IsZero() {
				assert.Equal(t, tc.want.Add(finishPrecision), podEnd(trimmed))
			}
		})
	}
}
