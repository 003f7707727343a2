"""The two programs the lab builds into single-binary images: a pause and an HTTP backend.

Both are a few lines of Go compiled with CGO_ENABLED=0 into static binaries, so each image is
one file in one layer: no libc, no shell, nothing to pull.

- pause: the process that holds a pod sandbox's namespaces. As PID 1 of a pod that shares
  its PID namespace it inherits orphans, so it reaps every child; SIGTERM or SIGINT ends it
  with status 0 (what the kubelet expects when it stops a sandbox).
- backend: answers every GET (and HEAD) with which pod and node served it, as one JSON line
  with a Content-Length: {"pod": ..., "node": ..., "client": ...}. The pod comes from POD_NAME
  (downward API), else HOSTNAME, else the kernel's hostname; the node from NODE_NAME; the
  client is the peer address as the pod saw it (kube-proxy's SNAT shows there). It listens on
  all addresses, both families, on $PORT (default 8080).
"""

from __future__ import annotations

PAUSE_GO = """\
// The lab's pause: hold the sandbox, reap orphans, exit 0 on SIGTERM or SIGINT.
package main

import (
\t"os"
\t"os/signal"
\t"syscall"
)

func main() {
\tsignals := make(chan os.Signal, 16)
\tsignal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
\treap()
\tfor sig := range signals {
\t\tif sig != syscall.SIGCHLD {
\t\t\tos.Exit(0)
\t\t}
\t\treap()
\t}
}

// reap collects every exited child; signals coalesce, so one SIGCHLD may stand for many.
func reap() {
\tfor {
\t\tvar status syscall.WaitStatus
\t\tpid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
\t\tif pid <= 0 || err != nil {
\t\t\treturn
\t\t}
\t}
}
"""

BACKEND_GO = """\
// The lab's backend: say which pod and node answered, and whom.
package main

import (
\t"encoding/json"
\t"log"
\t"net"
\t"net/http"
\t"os"
\t"strconv"
)

func firstSet(names ...string) string {
\tfor _, name := range names {
\t\tif value := os.Getenv(name); value != "" {
\t\t\treturn value
\t\t}
\t}
\treturn ""
}

func main() {
\tport := firstSet("PORT")
\tif port == "" {
\t\tport = "8080"
\t}
\tpod := firstSet("POD_NAME", "HOSTNAME")
\tif pod == "" {
\t\tpod, _ = os.Hostname()
\t}
\tnode := firstSet("NODE_NAME")
\thttp.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
\t\tif r.Method != http.MethodGet && r.Method != http.MethodHead {
\t\t\thttp.Error(w, "GET only", http.StatusMethodNotAllowed)
\t\t\treturn
\t\t}
\t\tclient, _, err := net.SplitHostPort(r.RemoteAddr)
\t\tif err != nil {
\t\t\tclient = r.RemoteAddr
\t\t}
\t\tbody, _ := json.Marshal(map[string]string{"pod": pod, "node": node, "client": client})
\t\tbody = append(body, '\\n')
\t\tw.Header().Set("Content-Type", "application/json")
\t\tw.Header().Set("Content-Length", strconv.Itoa(len(body)))
\t\tif r.Method == http.MethodGet {
\t\t\tw.Write(body)
\t\t}
\t})
\tlog.Printf("backend %s on node %q listening on :%s", pod, node, port)
\tlog.Fatal(http.ListenAndServe(":"+port, nil))
}
"""
