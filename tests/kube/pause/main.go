// pause is the first process of every pod sandbox: it holds the pod's namespaces open until the
// kubelet stops the pod. As PID 1 of the pod's PID namespace it inherits orphans, so it reaps them;
// SIGTERM or SIGINT (how the runtime stops a sandbox) end it with status 0.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		// Several children can exit behind one SIGCHLD: collect every one that has.
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
