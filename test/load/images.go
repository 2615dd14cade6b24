package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// image is one pushed image: its repository, tag, manifest digest and
// layers (digest → bytes, kept to check every byte and Range served).
type image struct {
	repo, tag, manifest string
	layers              []layer
}

type layer struct {
	digest string
	data   []byte
}

// pushImages pushes n random images of layers layers each to host.
func pushImages(ctx context.Context, host string, n, layers int, maxLayer int64) ([]image, error) {
	var out []image
	for i := range n {
		size := 1024 + rand.Int64N(max(maxLayer-1024, 1))
		img, err := random.Image(size, int64(layers))
		if err != nil {
			return nil, err
		}
		im := image{repo: fmt.Sprintf("load/app%d", i), tag: "v1"}
		ref, err := name.ParseReference(host+"/"+im.repo+":"+im.tag, name.Insecure)
		if err != nil {
			return nil, err
		}
		if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
			return nil, fmt.Errorf("push %s: %w", ref, err)
		}
		d, _ := img.Digest()
		im.manifest = d.String()
		ls, _ := img.Layers()
		for _, l := range ls {
			ld, _ := l.Digest()
			rc, err := l.Compressed()
			if err != nil {
				return nil, err
			}
			data, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				return nil, err
			}
			im.layers = append(im.layers, layer{digest: ld.String(), data: data})
		}
		out = append(out, im)
	}
	return out, nil
}
