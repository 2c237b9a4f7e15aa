package imgpull

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// dockerHub is how the store names Docker Hub's registry; go-containerregistry
// says index.docker.io.
const dockerHub = "docker.io"

// parseRef parses a reference as docker does: "alpine" is
// docker.io/library/alpine:latest. insecure allows plain HTTP.
func parseRef(ref string, insecure bool) (name.Reference, error) {
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil {
		return nil, fmt.Errorf("bad image reference %q: %w", ref, err)
	}
	return r, nil
}

// repoName is the store's name of a reference's repository:
// "docker.io/library/alpine", "127.0.0.1:5000/app".
func repoName(r name.Reference) string {
	reg := r.Context().RegistryStr()
	if reg == name.DefaultRegistry {
		reg = dockerHub
	}
	return reg + "/" + r.Context().RepositoryStr()
}

// storeKey is the key an image pulled by ref is stored under (see
// layerdb.Image.Key).
func storeKey(ref string) (string, error) {
	r, err := parseRef(ref, false)
	if err != nil {
		return "", err
	}
	switch r := r.(type) {
	case name.Tag:
		return repoName(r) + ":" + r.TagStr(), nil
	case name.Digest:
		return repoName(r) + "@" + r.DigestStr(), nil
	}
	return "", fmt.Errorf("bad image reference %q", ref)
}

// FamiliarName shortens a store repository name as docker shows it:
// "docker.io/library/alpine" is "alpine", "docker.io/user/app" is "user/app".
func FamiliarName(repo string) string {
	if rest, ok := strings.CutPrefix(repo, dockerHub+"/"); ok {
		return strings.TrimPrefix(rest, "library/")
	}
	return repo
}
