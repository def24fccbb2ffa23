package domain_test

import (
	"errors"
	"fmt"

	"github.com/midsummer/certmgr/domain"
)

func ExampleParse() {
	for _, raw := range []string{"Shop.Bücher.Example.", "shop.example.com;include /etc/passwd", "0x7f.1"} {
		n, err := domain.Parse(raw)
		var rej *domain.RejectedError
		if errors.As(err, &rej) {
			fmt.Println("rejected:", rej.Reason)
			continue
		}
		fmt.Println(n)
	}
	// Output:
	// shop.xn--bcher-kva.example
	// rejected: the name contains a character other than letters, digits, hyphens and dots
	// rejected: the name is an IP address; enter a host name such as shop.example.com
}

func ExamplePolicy_Parse() {
	p := domain.Policy{CNAMETarget: "custom.midsummer.cloud"}
	_, err := p.Parse("app.midsummer.cloud")
	fmt.Println(err)
	// Output:
	// domain "app.midsummer.cloud" rejected: the name is inside the platform's own domain
}
