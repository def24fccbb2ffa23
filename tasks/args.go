package tasks

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/worker"
)

// domainRef is the first argument of the per-domain tasks: a row id (an int,
// as Django sends it) or a domain name (a string).
type domainRef struct {
	ID   int64
	Name domain.Name
}

func (r domainRef) String() string {
	if r.Name != "" {
		return string(r.Name)
	}
	return "#" + strconv.FormatInt(r.ID, 10)
}

// parseRef reads args[0] of t as a row id or a domain name. A name is
// validated by the platform's policy before anything else sees it.
func (s *Service) parseRef(t *worker.Task) (domainRef, error) {
	if len(t.Args) != 1 {
		return domainRef{}, badArgs("%s takes one argument (custom_domain_id), got %d", t.Name, len(t.Args))
	}
	raw := bytes.TrimSpace(t.Args[0])
	var id json.Number
	if err := json.Unmarshal(raw, &id); err == nil && len(raw) > 0 && raw[0] != '"' {
		n, err := id.Int64()
		if err != nil || n <= 0 {
			return domainRef{}, badArgs("custom_domain_id must be a positive integer, got %s", raw)
		}
		return domainRef{ID: n}, nil
	}
	var str string
	if err := json.Unmarshal(raw, &str); err != nil {
		return domainRef{}, badArgs("custom_domain_id must be an integer id or a domain name, got %.100s", raw)
	}
	name, err := s.cfg.Names.Parse(str)
	if err != nil {
		return domainRef{}, err
	}
	return domainRef{Name: name}, nil
}

// boolKwarg reads an optional boolean keyword argument.
func boolKwarg(t *worker.Task, name string) (bool, error) {
	var v bool
	if _, err := t.Kwarg(name, &v); err != nil {
		return false, badArgs("%s must be true or false: %v", name, err)
	}
	return v, nil
}
