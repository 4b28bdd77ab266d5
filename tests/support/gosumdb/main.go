// Command gosumdb is a throwaway Go checksum database for Entrepot's tests.
//
// It signs a fresh in-memory transparency log (sumdb.TestServer) with a key generated at
// start-up and records a module version the first time it is looked up, hashing the files of
// a static GOPROXY tree:
//
//	gosumdb -name sum.test -addr 127.0.0.1:PORT -proxy DIR
//
// The first line of stdout is the verifier key (NAME+HASH+KEY, usable as GOSUMDB), the
// second is the base URL. It serves /latest, /lookup/PATH@VERSION and /tile/... (see
// sumdb.ServerPaths); unknown modules answer 404. Requests are logged to stderr.
//
// Build it without modules against Debian's golang-golang-x-mod-dev:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o gosumdb main.go
package main

import (
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb"
	"golang.org/x/mod/sumdb/dirhash"
	"golang.org/x/mod/sumdb/note"
)

func main() {
	name := flag.String("name", "sum.test", "checksum database name (host[/path])")
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	proxyDir := flag.String("proxy", "", "root of the static GOPROXY tree to hash")
	flag.Parse()
	if *proxyDir == "" {
		log.Fatal("gosumdb: -proxy is required")
	}

	skey, vkey, err := note.GenerateKey(rand.Reader, *name)
	if err != nil {
		log.Fatalf("gosumdb: generate key: %v", err)
	}

	// gosum returns the go.sum lines for path@vers. A missing .zip or .mod yields the
	// *fs.PathError from os.Open unchanged, so os.IsNotExist holds and the server says 404.
	gosum := func(path, vers string) ([]byte, error) {
		escPath, err := module.EscapePath(path)
		if err != nil {
			return nil, err
		}
		escVers, err := module.EscapeVersion(vers)
		if err != nil {
			return nil, err
		}
		base := filepath.Join(*proxyDir, filepath.FromSlash(escPath), "@v", escVers)
		zipHash, err := dirhash.HashZip(base+".zip", dirhash.Hash1)
		if err != nil {
			return nil, err
		}
		modHash, err := dirhash.Hash1([]string{"go.mod"}, func(string) (io.ReadCloser, error) {
			return os.Open(base + ".mod")
		})
		if err != nil {
			return nil, err
		}
		return []byte(fmt.Sprintf("%s %s %s\n%s %s/go.mod %s\n",
			path, vers, zipHash, path, vers, modHash)), nil
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("gosumdb: listen: %v", err)
	}
	fmt.Println(vkey)
	fmt.Println("http://" + ln.Addr().String())

	srv := sumdb.NewServer(sumdb.NewTestServer(skey, gosum))
	mux := http.NewServeMux()
	for _, p := range sumdb.ServerPaths {
		mux.Handle(p, srv)
	}
	logged := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.Printf("%s %s", r.Method, r.URL.RequestURI())
		mux.ServeHTTP(w, r)
	})
	log.Fatal(http.Serve(ln, logged))
}
