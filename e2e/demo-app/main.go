// demo-app is the tiny web application Vigie's demo and end-to-end tests deploy.
//
// It serves on $PORT (default 8080):
//
//	GET /health  -> 200 "ok" when the app is healthy, 500 "fail" otherwise
//	GET /        -> the commit it runs and its message
//
// Its behaviour comes from a directory of files ($APP_DIR, default /app): "health"
// (ok|fail|crash) and "message". A commit of the demo repository is such a directory,
// so a "bad commit" is simply one whose health file says fail or crash. The commit SHA
// comes from $VIGIE_SHA (set by Vigie) or the file "sha".
//
// "demo-app check" is a Docker HEALTHCHECK: exit 0 when /health answers 200.
//
// "demo-app hook SECONDS EXIT [FILE]" is a stand-in for a pre-deploy hook (a backup):
// it sleeps, writes FILE (default: $VIGIE_OUTPUT, when set) and exits with EXIT.
package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

func read(dir, name, fallback string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return fallback
	}
	return strings.TrimSpace(string(b))
}

func hook(args []string) {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: demo-app hook SECONDS EXIT [FILE]")
		os.Exit(64)
	}
	seconds, _ := strconv.ParseFloat(args[0], 64)
	code, _ := strconv.Atoi(args[1])
	time.Sleep(time.Duration(seconds * float64(time.Second)))
	file := os.Getenv("VIGIE_OUTPUT")
	if len(args) > 2 {
		file = args[2]
	}
	if file != "" {
		content := fmt.Sprintf("backup of %s before %s\n", os.Getenv("VIGIE_PREVIOUS_SHA"), os.Getenv("VIGIE_SHA"))
		if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	fmt.Printf("hook done after %ss, exit %d\n", args[0], code)
	os.Exit(code)
}

func check() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	client := http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get("http://127.0.0.1:" + port + "/health")
	if err != nil || resp.StatusCode != http.StatusOK {
		os.Exit(1)
	}
	os.Exit(0)
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "hook" {
		hook(os.Args[2:])
	}
	if len(os.Args) > 1 && os.Args[1] == "check" {
		check()
	}
	dir := os.Getenv("APP_DIR")
	if dir == "" {
		dir = "/app"
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	if read(dir, "health", "ok") == "crash" {
		fmt.Fprintln(os.Stderr, "demo-app: this commit crashes at start")
		os.Exit(3)
	}
	sha := os.Getenv("VIGIE_SHA")
	if sha == "" {
		sha = read(dir, "sha", "unknown")
	}
	http.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		if read(dir, "health", "ok") == "ok" {
			fmt.Fprintln(w, "ok")
			return
		}
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintln(w, "fail")
	})
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "demo-app %s: %s\n", sha, read(dir, "message", "hello"))
	})
	if err := http.ListenAndServe(":"+port, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
