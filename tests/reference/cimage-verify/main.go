// cimage-verify: the policy check of `skopeo copy --all`, made by
// containers/image 5.23 itself, for the tests to compare mlfs with.
//
//	cimage-verify --policy FILE --registries.d DIR [--src-tls-verify=false] docker://REF
//
// skopeo copy --all checks a multi-platform image instance by instance
// (copy/copy.go: copyMultipleImages calls copyOneImage for each, and
// copyOneImage calls PolicyContext.IsRunningImageAllowed on that
// instance; the list itself is never checked), and a single image once.
// This does the same, but goes on after a refusal, so that every
// platform gets its own answer, one line each:
//
//	accepted sha256:... linux/arm64
//	refused sha256:... linux/amd64: Signature for identity ... is not accepted
//
// (a single image: "-" for the platform).  Exit status as skopeo's: 0
// when every instance is accepted, 1 otherwise, also for errors (which
// print "error: ..." and no verdict).
//
// It is built against Debian's containers/image with its sigstore
// verification reinstated (see README.md and build.sh).  `cimage-verify
// sign` (sign.go) signs as skopeo copy --sign-by-sigstore-private-key.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/containers/image/v5/docker"
	"github.com/containers/image/v5/image"
	"github.com/containers/image/v5/manifest"
	"github.com/containers/image/v5/signature"
	"github.com/containers/image/v5/types"
	digest "github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
)

type instance struct {
	digest   *digest.Digest // nil: the image itself, not a list
	platform string
}

func platformName(p *imgspecv1.Platform) string {
	if p == nil {
		return "?"
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// instances lists what copy --all checks: each instance of a list, in
// the list's order, or the image itself.
func instances(ctx context.Context, src types.ImageSource) ([]instance, error) {
	blob, mimeType, err := src.GetManifest(ctx, nil)
	if err != nil {
		return nil, err
	}
	if !manifest.MIMETypeIsMultiImage(mimeType) {
		return []instance{{nil, "-"}}, nil
	}
	var res []instance
	switch mimeType {
	case imgspecv1.MediaTypeImageIndex:
		index, err := manifest.OCI1IndexFromManifest(blob)
		if err != nil {
			return nil, err
		}
		for _, m := range index.Manifests {
			d := m.Digest
			res = append(res, instance{&d, platformName(m.Platform)})
		}
	default:
		list, err := manifest.Schema2ListFromManifest(blob)
		if err != nil {
			return nil, err
		}
		for _, m := range list.Manifests {
			d := m.Digest
			p := imgspecv1.Platform{OS: m.Platform.OS, Architecture: m.Platform.Architecture,
				Variant: m.Platform.Variant}
			res = append(res, instance{&d, platformName(&p)})
		}
	}
	return res, nil
}

func run(policyPath, registriesD string, tlsVerify bool, name string) (bool, error) {
	ctx := context.Background()
	if !strings.HasPrefix(name, "docker://") {
		return false, fmt.Errorf("%q: only docker:// references", name)
	}
	ref, err := docker.Transport.ParseReference(strings.TrimPrefix(name, "docker:"))
	if err != nil {
		return false, err
	}
	sys := &types.SystemContext{SignaturePolicyPath: policyPath, RegistriesDirPath: registriesD}
	if !tlsVerify {
		sys.DockerInsecureSkipTLSVerify = types.OptionalBoolTrue
	}
	policy, err := signature.NewPolicyFromFile(policyPath)
	if err != nil {
		return false, err
	}
	pc, err := signature.NewPolicyContext(policy)
	if err != nil {
		return false, err
	}
	defer pc.Destroy()
	src, err := ref.NewImageSource(ctx, sys)
	if err != nil {
		return false, err
	}
	defer src.Close()
	list, err := instances(ctx, src)
	if err != nil {
		return false, err
	}
	all := true
	for _, in := range list {
		shown := "-"
		if in.digest != nil {
			shown = in.digest.String()
		} else if blob, _, err := src.GetManifest(ctx, nil); err == nil {
			shown = digest.FromBytes(blob).String()
		}
		// As copyOneImage: the instance, under the reference as given.
		ok, err := pc.IsRunningImageAllowed(ctx, image.UnparsedInstance(src, in.digest))
		if ok && err == nil {
			fmt.Printf("accepted %s %s\n", shown, in.platform)
			continue
		}
		all = false
		reason := "refused without a reason"
		if err != nil {
			reason = strings.ReplaceAll(err.Error(), "\n", " ")
		}
		fmt.Printf("refused %s %s: %s\n", shown, in.platform, reason)
	}
	return all, nil
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "sign" {
		if err := signMain(os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "error: %v\n", err)
			os.Exit(1)
		}
		return
	}
	policy := flag.String("policy", "", "the containers-policy.json(5) to enforce")
	registriesD := flag.String("registries.d", "", "the registries.d(5) directory")
	tlsVerify := flag.Bool("src-tls-verify", true, "require HTTPS and verify certificates (as skopeo's)")
	flag.Parse()
	if *policy == "" || *registriesD == "" || flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: cimage-verify --policy FILE --registries.d DIR [--src-tls-verify=false] docker://REF")
		os.Exit(1)
	}
	ok, err := run(*policy, *registriesD, *tlsVerify, flag.Arg(0))
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}
