// kube-state-metrics (the Kubernetes project's exporter of object state:
// pods' readiness, nodes' conditions and labels), built from its module.
// Its own main package cannot be imported, so this one runs its public app
// package with its own flags, without the config-file watcher we never use.
package main

import (
	"context"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"
	"k8s.io/kube-state-metrics/v2/pkg/app"
	"k8s.io/kube-state-metrics/v2/pkg/options"
)

func main() {
	opts := options.NewOptions()
	cmd := options.InitCommand
	cmd.Run = func(*cobra.Command, []string) {
		if err := app.RunKubeStateMetricsWrapper(context.Background(), opts); err != nil {
			klog.ErrorS(err, "kube-state-metrics stopped")
			klog.FlushAndExit(klog.ExitFlushTimeout, 1)
		}
	}
	opts.AddFlags(cmd)
	if err := opts.Parse(); err != nil {
		klog.FlushAndExit(klog.ExitFlushTimeout, 1)
	}
}
