package grafana

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// OrgReader is one org and a client that can read it.
type OrgReader struct {
	Org    Org
	Client *Client
	// Via says how: "member" (basic auth, X-Grafana-Org-Id) or "token".
	Via string
}

// Access says which orgs rebind reads and whether that is all of them.
type Access struct {
	Orgs []OrgReader
	// Complete: every org that exists is in Orgs.
	Complete bool
	// Limited: the caller asked for these orgs only (--grafana-org-id).
	Limited []int64
}

// UnreadableOrgsError names orgs that exist but that none of the
// credentials can read. rebind would otherwise verify some orgs and report
// success for a Grafana whose other orgs it never looked at.
type UnreadableOrgsError struct {
	URL  string
	Orgs []Org
	// Requested: the orgs were asked for by id, rather than found by listing.
	Requested bool
	User      string
}

func (e *UnreadableOrgsError) Error() string {
	names := make([]string, 0, len(e.Orgs))
	for _, o := range e.Orgs {
		if o.Name != "" {
			names = append(names, fmt.Sprintf("%d (%s)", o.ID, o.Name))
		} else {
			names = append(names, fmt.Sprint(o.ID))
		}
	}
	who := "the credentials"
	if e.User != "" {
		who = fmt.Sprintf("user %q", e.User)
	}
	what := "exist(s) but"
	if e.Requested {
		what = "was requested but"
	}
	return fmt.Sprintf("grafana %s: org(s) %s %s %s cannot read them (a Grafana server admin is not a member of every org), so their dashboards could not be verified. Fix one of: add %s to each org (Administration > Organizations, or POST /api/orgs/<id>/users); pass a service-account token of each org with --grafana-token (repeatable); or limit the check on purpose with --grafana-org-id (repeatable) to the orgs you mean",
		e.URL, strings.Join(names, ", "), what, who, who)
}

// UnknownOrgsError says rebind cannot tell which orgs exist, so it cannot
// prove it verifies all of them.
type UnknownOrgsError struct {
	URL    string
	Reason string
}

func (e *UnknownOrgsError) Error() string {
	return fmt.Sprintf("grafana %s: cannot list every org (%s), so rebind cannot prove it verifies all of them. Fix one of: use a Grafana server admin's credentials (the chart's admin Secret, --grafana-secret); or name the orgs to check with --grafana-org-id (repeatable)", e.URL, e.Reason)
}

// ResolveAccess finds a reader for every org and refuses to go on with an
// org it cannot read. want limits the orgs on purpose (empty: all orgs).
//
// A basic-auth user reads the orgs it is a member of (X-Grafana-Org-Id);
// each token reads its own org. Which orgs exist comes from /api/orgs, as
// the main user or with ListCredentials; it needs a server admin. Every
// reader is then asked which org its requests run in: for a non-member,
// Grafana does not refuse the header but runs the request in org -1, where
// search is simply empty (docs/grafana-conformance.md §1).
func (c *Client) ResolveAccess(ctx context.Context, want []int64) (*Access, error) {
	readers := map[int64]OrgReader{}
	if c.creds.Token != "" {
		if err := c.addToken(ctx, c, readers); err != nil {
			return nil, err
		}
	} else {
		mine, err := c.UserOrgs(ctx)
		if err != nil {
			return nil, fmt.Errorf("listing the orgs of user %q: %w", c.creds.User, err)
		}
		for _, o := range mine {
			readers[o.ID] = OrgReader{Org: o, Client: c.WithOrg(o.ID), Via: "member"}
		}
	}
	for _, tok := range c.orgTokens {
		if err := c.addToken(ctx, c.withCredentials(Credentials{Token: tok, Source: "--grafana-token"}), readers); err != nil {
			return nil, err
		}
	}

	var all []Org
	var whyUnknown string
	lister := c
	if c.creds.Token != "" {
		lister = nil
		if c.lister != nil {
			lister = c.withCredentials(*c.lister)
		}
	}
	if lister != nil {
		var err error
		all, err = lister.AllOrgs(ctx)
		if errors.Is(err, ErrNotServerAdmin) {
			whyUnknown = fmt.Sprintf("user %q is not a Grafana server admin", lister.creds.User)
		} else if err != nil {
			return nil, fmt.Errorf("listing every org: %w", err)
		}
	} else {
		whyUnknown = "a service-account token sees only its own org and no server admin's credentials were given"
	}

	acc := &Access{Limited: want}
	if len(want) > 0 {
		var missing []Org
		for _, id := range want {
			r, ok := readers[id]
			if !ok {
				o := Org{ID: id}
				if i := slices.IndexFunc(all, func(a Org) bool { return a.ID == id }); i >= 0 {
					o = all[i]
				}
				missing = append(missing, o)
				continue
			}
			acc.Orgs = append(acc.Orgs, r)
		}
		if len(missing) > 0 {
			return nil, &UnreadableOrgsError{URL: c.display, Orgs: missing, Requested: true, User: c.creds.User}
		}
	} else {
		if all == nil && whyUnknown != "" {
			return nil, &UnknownOrgsError{URL: c.display, Reason: whyUnknown}
		}
		var missing []Org
		for _, o := range all {
			r, ok := readers[o.ID]
			if !ok {
				missing = append(missing, o)
				continue
			}
			if r.Org.Name == "" {
				r.Org.Name = o.Name
			}
			acc.Orgs = append(acc.Orgs, r)
		}
		if len(missing) > 0 {
			return nil, &UnreadableOrgsError{URL: c.display, Orgs: missing, User: c.creds.User}
		}
		acc.Complete = true
	}
	slices.SortFunc(acc.Orgs, func(a, b OrgReader) int { return int(a.Org.ID - b.Org.ID) })
	for _, r := range acc.Orgs {
		if err := r.Client.CheckOrg(ctx, r.Org.ID); err != nil {
			return nil, err
		}
	}
	return acc, nil
}

// addToken records the org a token belongs to.
func (c *Client) addToken(ctx context.Context, tc *Client, readers map[int64]OrgReader) error {
	o, err := tc.CurrentOrg(ctx)
	if err != nil {
		return fmt.Errorf("finding the org of a service-account token: %w", err)
	}
	if _, dup := readers[o.ID]; !dup {
		readers[o.ID] = OrgReader{Org: o, Client: tc, Via: "token"}
	}
	return nil
}

// WrongOrgError says requests meant for one org run in another: Grafana
// runs X-Grafana-Org-Id requests of a non-member in org -1 instead of
// refusing them, where every list is empty.
type WrongOrgError struct {
	URL       string
	Want, Got int64
	Err       error
}

func (e *WrongOrgError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("grafana %s: requests for org %d do not run in that org (%v): the user is probably not a member of it, and Grafana would show it as empty rather than refuse; add the user to org %d or pass a token of it", e.URL, e.Want, e.Err, e.Want)
	}
	return fmt.Sprintf("grafana %s: requests for org %d run in org %d instead; add the user to org %d or pass a token of it", e.URL, e.Want, e.Got, e.Want)
}

// CheckOrg proves that the client's requests run in org id, so that an
// empty answer means an empty org and not "no access".
func (c *Client) CheckOrg(ctx context.Context, id int64) error {
	cur, err := c.CurrentOrg(ctx)
	if errors.Is(err, ErrNotFound) {
		return &WrongOrgError{URL: c.display, Want: id, Err: err}
	}
	if err != nil {
		return err
	}
	if cur.ID != id {
		return &WrongOrgError{URL: c.display, Want: id, Got: cur.ID}
	}
	return nil
}
