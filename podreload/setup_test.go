package podreload

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// webLabels are the test Deployment's selector labels.
var webLabels = map[string]string{"app": "midsummer", "component": "web"}

// newDeployment is a Deployment like deploy/ ships: its selector is
// matchLabels plus an expression, so a test notices labels being guessed.
func newDeployment(namespace, name string) *appsv1.Deployment {
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{"app": "midsummer"}},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{
				MatchLabels: map[string]string{"app": "midsummer"},
				MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "component", Operator: metav1.LabelSelectorOpIn, Values: []string{"web"}},
				},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: webLabels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{
					{Name: "proxy", Image: "nginx:1.22"},
					{Name: "certmgr", Image: "certmgr"},
				}},
			},
		},
	}
}
