// Independent cross-check of a Safeshare audit bundle with the Go reference
// implementations: golang.org/x/mod/sumdb/note, transparency-dev/formats/note
// (cosignature/v1) and transparency-dev/merkle (RFC 6962 hashing and proofs).
//
//	cd tests/data/audit/crosscheck && go run . ../golden_bundle.json [proofs.json]
//
// With a second file, {"inclusion": [{"index", "size", "proof": [base64 ...]}],
// "consistency": [{"size1", "size2", "proof": [base64 ...]}]} (proofs our
// MerkleTree made), it also verifies each with proof.VerifyInclusion /
// proof.VerifyConsistency against the roots recomputed here from the leaves
// (tests/test_audit_go_crosscheck.py writes one).
//
// It trusts the bundle's own log_vkeys and witness_vkeys: it checks format
// compatibility, not trust.
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	fnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

type proofs struct {
	Inclusion []struct {
		Index uint64   `json:"index"`
		Size  uint64   `json:"size"`
		Proof [][]byte `json:"proof"`
	} `json:"inclusion"`
	Consistency []struct {
		Size1 uint64   `json:"size1"`
		Size2 uint64   `json:"size2"`
		Proof [][]byte `json:"proof"`
	} `json:"consistency"`
}

type bundle struct {
	Origin      string   `json:"origin"`
	Leaves      []string `json:"leaves"`
	Checkpoints []struct {
		Note         string   `json:"note"`
		Cosignatures []string `json:"cosignatures"`
	} `json:"checkpoints"`
	KeyLists     []string `json:"key_lists"`
	LogVkeys     []string `json:"log_vkeys"`
	WitnessVkeys []string `json:"witness_vkeys"`
}

func must(err error) {
	if err != nil {
		fmt.Println("FAIL:", err)
		os.Exit(1)
	}
}

func main() {
	raw, err := os.ReadFile(os.Args[1])
	must(err)
	var b bundle
	must(json.Unmarshal(raw, &b))
	var vs []note.Verifier
	for _, k := range b.LogVkeys {
		v, err := note.NewVerifier(k)
		must(err)
		vs = append(vs, v)
	}
	w, err := fnote.NewVerifierForCosignatureV1(b.WitnessVkeys[0])
	must(err)
	// Key lists are plain signed notes.
	for i, kl := range b.KeyLists {
		n, err := note.Open([]byte(kl), note.VerifierList(vs...))
		must(err)
		fmt.Printf("key list %d: %d verified sigs\n", i, len(n.Sigs))
	}
	// Recompute the tree with the compact range of transparency-dev/merkle.
	h := rfc6962.DefaultHasher
	rf := compact.RangeFactory{Hash: h.HashChildren}
	roots := map[uint64][]byte{}
	cr := rf.NewEmptyRange(0)
	var leafHashes [][]byte
	for _, l := range b.Leaves {
		data, err := base64.StdEncoding.DecodeString(l)
		must(err)
		lh := h.HashLeaf(data)
		leafHashes = append(leafHashes, lh)
		must(cr.Append(lh, nil))
		r, err := cr.GetRootHash(nil)
		must(err)
		roots[cr.End()] = r
	}
	for i, c := range b.Checkpoints {
		msg := c.Note + strings.Join(c.Cosignatures, "")
		n, err := note.Open([]byte(msg), note.VerifierList(append(vs, w)...))
		must(err)
		lines := strings.Split(n.Text, "\n")
		size, err := strconv.ParseUint(lines[1], 10, 64)
		must(err)
		root, err := base64.StdEncoding.DecodeString(lines[2])
		must(err)
		if string(root) != string(roots[size]) {
			must(fmt.Errorf("checkpoint %d root mismatch", i))
		}
		fmt.Printf("checkpoint %d size %d: %d verified sigs (log + witness), root matches\n", i, size, len(n.Sigs))
		// Inclusion proofs for every leaf, built from leaf hashes by a naive
		// recursion here and verified with transparency-dev/merkle/proof.
		for idx := uint64(0); idx < size; idx++ {
			p := path(idx, leafHashes[:size])
			must(proof.VerifyInclusion(h, idx, size, leafHashes[idx], p, root))
		}
	}
	if len(os.Args) > 2 {
		raw, err := os.ReadFile(os.Args[2])
		must(err)
		var ps proofs
		must(json.Unmarshal(raw, &ps))
		for _, p := range ps.Inclusion {
			if p.Size == 0 || p.Size > uint64(len(leafHashes)) {
				must(fmt.Errorf("inclusion proof for size %d: no such tree", p.Size))
			}
			err := proof.VerifyInclusion(h, p.Index, p.Size, leafHashes[p.Index], p.Proof, roots[p.Size])
			if err != nil {
				must(fmt.Errorf("our inclusion proof of leaf %d in size %d: %w", p.Index, p.Size, err))
			}
		}
		for _, p := range ps.Consistency {
			if p.Size2 == 0 || p.Size2 > uint64(len(leafHashes)) {
				must(fmt.Errorf("consistency proof to size %d: no such tree", p.Size2))
			}
			err := proof.VerifyConsistency(h, p.Size1, p.Size2, p.Proof, roots[p.Size1], roots[p.Size2])
			if err != nil {
				must(fmt.Errorf("our consistency proof %d -> %d: %w", p.Size1, p.Size2, err))
			}
		}
		fmt.Printf("%d inclusion and %d consistency proofs verified\n", len(ps.Inclusion), len(ps.Consistency))
	}
	fmt.Println("OK")
}

func mth(d [][]byte) []byte {
	h := rfc6962.DefaultHasher
	if len(d) == 1 {
		return d[0]
	}
	k := 1
	for k*2 < len(d) {
		k *= 2
	}
	return h.HashChildren(mth(d[:k]), mth(d[k:]))
}

func path(m uint64, d [][]byte) [][]byte {
	if len(d) == 1 {
		return nil
	}
	k := uint64(1)
	for k*2 < uint64(len(d)) {
		k *= 2
	}
	if m < k {
		return append(path(m, d[:k]), mth(d[k:]))
	}
	return append(path(m-k, d[k:]), mth(d[:k]))
}
