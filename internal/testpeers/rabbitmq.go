package testpeers

import (
	"context"
	"fmt"
	"net/url"
	"os/exec"
	"testing"
	"time"
)

// SharedRabbitMQAddr is the RabbitMQ every machine of this kind runs
// (guest/guest).
const SharedRabbitMQAddr = "127.0.0.1:5672"

// RabbitPeer is a virtual host of the shared RabbitMQ that belongs to one
// test, deleted (with its queues and exchanges) when the test ends.
type RabbitPeer struct {
	VHost string
	URL   string // amqp://guest:guest@127.0.0.1:5672/<vhost>
}

// RabbitMQ creates a virtual host for the test, with guest's permissions.
func RabbitMQ(t testing.TB) *RabbitPeer {
	t.Helper()
	if err := waitTCP(SharedRabbitMQAddr, 2*time.Second); err != nil {
		missing(t, "rabbitmq on %s: %v", SharedRabbitMQAddr, err)
	}
	p := &RabbitPeer{VHost: "certmgr-test-" + RandomHex(6)}
	p.URL = "amqp://guest:guest@" + SharedRabbitMQAddr + "/" + url.PathEscape(p.VHost)
	RabbitCtl(t, "add_vhost", p.VHost)
	t.Cleanup(func() { _ = rabbitCtl("delete_vhost", p.VHost) })
	RabbitCtl(t, "set_permissions", "-p", p.VHost, "guest", ".*", ".*", ".*")
	return p
}

// RabbitCtl runs rabbitmqctl on the shared node and fails the test on error.
func RabbitCtl(t testing.TB, args ...string) {
	t.Helper()
	if err := rabbitCtl(args...); err != nil {
		t.Fatal(err)
	}
}

func rabbitCtl(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", append([]string{"-q"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("rabbitmqctl %v: %v: %s", args, err, out)
	}
	return nil
}
