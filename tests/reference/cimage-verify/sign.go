// cimage-verify sign: `skopeo copy --all --sign-by-sigstore-private-key`,
// made by containers/image 5.23 itself (its signing reinstated: README.md),
// for the tests to sign images the way skopeo and podman do.
//
//	cimage-verify sign --sigstore-private-key KEY --passphrase-file FILE \
//	    --registries.d DIR [--tls-verify=false] docker://SRC docker://DST
//
// Every platform's manifest and the list are signed; the signatures go
// where registries.d says (use-sigstore-attachments: true: the registry).
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/containers/image/v5/copy"
	"github.com/containers/image/v5/docker"
	"github.com/containers/image/v5/signature"
	"github.com/containers/image/v5/types"
)

func signMain(args []string) error {
	fs := flag.NewFlagSet("sign", flag.ExitOnError)
	key := fs.String("sigstore-private-key", "", "cosign's encrypted private key")
	passFile := fs.String("passphrase-file", "", "its passphrase (the file's first line)")
	registriesD := fs.String("registries.d", "", "the registries.d(5) directory")
	tlsVerify := fs.Bool("tls-verify", true, "require HTTPS and verify certificates")
	fs.Parse(args)
	if *key == "" || *passFile == "" || *registriesD == "" || fs.NArg() != 2 {
		return fmt.Errorf("usage: cimage-verify sign --sigstore-private-key KEY --passphrase-file FILE --registries.d DIR [--tls-verify=false] docker://SRC docker://DST")
	}
	pass, err := os.ReadFile(*passFile)
	if err != nil {
		return err
	}
	if i := bytes.IndexByte(pass, '\n'); i >= 0 {
		pass = pass[:i]
	}
	var refs [2]types.ImageReference
	for i, name := range fs.Args() {
		if !strings.HasPrefix(name, "docker://") {
			return fmt.Errorf("%q: only docker:// references", name)
		}
		if refs[i], err = docker.Transport.ParseReference(strings.TrimPrefix(name, "docker:")); err != nil {
			return err
		}
	}
	sys := &types.SystemContext{RegistriesDirPath: *registriesD}
	if !*tlsVerify {
		sys.DockerInsecureSkipTLSVerify = types.OptionalBoolTrue
	}
	// Copying is not what is checked here: any image may be copied.
	policy := &signature.Policy{Default: []signature.PolicyRequirement{signature.NewPRInsecureAcceptAnything()}}
	pc, err := signature.NewPolicyContext(policy)
	if err != nil {
		return err
	}
	defer pc.Destroy()
	_, err = copy.Image(context.Background(), pc, refs[1], refs[0], &copy.Options{
		ImageListSelection:               copy.CopyAllImages,
		SignBySigstorePrivateKeyFile:     *key,
		SignSigstorePrivateKeyPassphrase: pass,
		SourceCtx:                        sys,
		DestinationCtx:                   sys,
	})
	return err
}
