package sandbox

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// podNetwork is the sandbox's pod network as the API server sees it.
//
// The API server's pod proxy (/api/v1/namespaces/NS/pods/POD:PORT/proxy/...)
// dials the pod's status.podIP itself, and refuses an address that is not
// global unicast (loopback, link-local, unspecified: ResourceLocation in
// k8s.io/kubernetes pkg/registry/core/pod, 1.37), so kwok's pod IPs
// (10.244.x.y, from each node's podCIDR) cannot be made loopback addresses
// the Grafana runner listens on, and adding them to an interface needs root.
// The API server's proxy transport takes its proxy from the environment
// (k8s.io/apimachinery utilnet.SetTransportDefaults: http.ProxyFromEnvironment,
// loopback destinations excepted), and Go's transport speaks SOCKS5 for a
// socks5:// HTTP_PROXY, which, unlike an HTTP forward proxy (it gets the
// Host header, not the address dialed), names the pod IP and port the API
// server connects to. So kube-apiserver runs with HTTP_PROXY pointing at this
// SOCKS5 server: each connection to a pod address is handed to whatever
// serves that address (the Grafana runner), or refused as by a pod where
// nothing listens. Everything before this last hop is the real API server:
// authentication, the pods/proxy authorization, the pod lookup by name, the
// address check, the path rewriting and the headers it strips.
type podNetwork struct {
	ln   net.Listener
	srv  *http.Server
	pipe *connListener

	mu    sync.RWMutex
	route func(hostport string) http.Handler
}

type targetKey struct{}

func newPodNetwork() (*podNetwork, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	n := &podNetwork{ln: ln, pipe: newConnListener(ln.Addr())}
	n.srv = &http.Server{
		Handler:           n,
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if tc, ok := c.(*targetConn); ok {
				return context.WithValue(ctx, targetKey{}, tc.target)
			}
			return ctx
		},
	}
	go func() { _ = n.srv.Serve(n.pipe) }()
	go n.accept()
	return n, nil
}

// proxyURL is the HTTP_PROXY value for kube-apiserver.
func (n *podNetwork) proxyURL() string { return "socks5://" + n.ln.Addr().String() }

// setRoute installs the function that finds the server of a pod address.
func (n *podNetwork) setRoute(route func(hostport string) http.Handler) {
	n.mu.Lock()
	n.route = route
	n.mu.Unlock()
}

func (n *podNetwork) lookup(hostport string) http.Handler {
	n.mu.RLock()
	route := n.route
	n.mu.RUnlock()
	if route == nil {
		return nil
	}
	return route(hostport)
}

func (n *podNetwork) accept() {
	for {
		c, err := n.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			target, err := n.handshake(c)
			if err != nil {
				_ = c.Close()
				return
			}
			if !n.pipe.deliver(&targetConn{Conn: c, target: target}) {
				_ = c.Close()
			}
		}()
	}
}

// SOCKS5 (RFC 1928), the subset Go's client uses: no authentication, CONNECT.
const (
	socksVersion     = 5
	socksNoAuth      = 0
	socksConnect     = 1
	socksIPv4        = 1
	socksDomain      = 3
	socksIPv6        = 4
	socksSucceeded   = 0
	socksRefused     = 5
	socksUnsupported = 7
)

// handshake reads the greeting and the CONNECT request and answers it:
// success when something serves the address, "connection refused" otherwise.
func (n *podNetwork) handshake(c net.Conn) (string, error) {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil || hdr[0] != socksVersion {
		return "", fmt.Errorf("not a SOCKS5 greeting")
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(c, methods); err != nil {
		return "", err
	}
	if _, err := c.Write([]byte{socksVersion, socksNoAuth}); err != nil {
		return "", err
	}
	var req [4]byte
	if _, err := io.ReadFull(c, req[:]); err != nil {
		return "", err
	}
	var host string
	switch req[3] {
	case socksIPv4, socksIPv6:
		ip := make(net.IP, 4)
		if req[3] == socksIPv6 {
			ip = make(net.IP, 16)
		}
		if _, err := io.ReadFull(c, ip); err != nil {
			return "", err
		}
		host = ip.String()
	case socksDomain:
		var l [1]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return "", err
		}
		name := make([]byte, l[0])
		if _, err := io.ReadFull(c, name); err != nil {
			return "", err
		}
		host = string(name)
	default:
		return "", fmt.Errorf("address type %d", req[3])
	}
	var port [2]byte
	if _, err := io.ReadFull(c, port[:]); err != nil {
		return "", err
	}
	target := net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(port[:]))))
	reply := func(code byte) error {
		_, err := c.Write([]byte{socksVersion, code, 0, socksIPv4, 0, 0, 0, 0, 0, 0})
		return err
	}
	if req[1] != socksConnect {
		_ = reply(socksUnsupported)
		return "", fmt.Errorf("command %d", req[1])
	}
	if n.lookup(target) == nil {
		_ = reply(socksRefused)
		return "", fmt.Errorf("nothing listens at %s", target)
	}
	return target, reply(socksSucceeded)
}

func (n *podNetwork) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	target, _ := r.Context().Value(targetKey{}).(string)
	h := n.lookup(target)
	if h == nil {
		// The pod went away while the connection stayed open: drop it,
		// as a reset connection looks to the API server.
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return
			}
		}
		http.Error(w, "nothing listens at "+target, http.StatusBadGateway)
		return
	}
	h.ServeHTTP(w, r)
}

func (n *podNetwork) close() error {
	_ = n.ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := n.srv.Shutdown(ctx)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// targetConn is a tunnelled connection and the pod address it was opened to.
type targetConn struct {
	net.Conn
	target string
}

// connListener hands connections that finished their SOCKS handshake to
// the HTTP server.
type connListener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newConnListener(addr net.Addr) *connListener {
	return &connListener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *connListener) deliver(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }
