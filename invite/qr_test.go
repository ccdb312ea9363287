package invite

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestQRFileRoundTrip: the PNG written to a file reads back as the token.
func TestQRFileRoundTrip(t *testing.T) {
	o, _ := sample(t)
	raw, err := o.QRPNG(512)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "invite.png")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	text, err := DecodeImage(f)
	if err != nil {
		t.Fatal(err)
	}
	if text != o.Text() {
		t.Fatalf("read %q, want the token", text)
	}
}

// photo makes a QR code look photographed: scaled by a factor that is
// not whole, turned by angle degrees on a grey background, lit unevenly,
// with sensor noise, and saved as a JPEG.
func photo(t *testing.T, pngRaw []byte, scale, angle float64, seed uint64) []byte {
	t.Helper()
	src, err := png.Decode(bytes.NewReader(pngRaw))
	if err != nil {
		t.Fatal(err)
	}
	sb := src.Bounds()
	side := int(float64(sb.Dx())*scale*1.5) + 40
	out := image.NewGray(image.Rect(0, 0, side, side))
	rng := rand.New(rand.NewPCG(seed, seed))
	sin, cos := math.Sincos(angle * math.Pi / 180)
	c := float64(side) / 2
	for y := range side {
		for x := range side {
			// Where this pixel of the photo falls on the code.
			dx, dy := float64(x)-c, float64(y)-c
			u := (cos*dx+sin*dy)/scale + float64(sb.Dx())/2
			v := (-sin*dx+cos*dy)/scale + float64(sb.Dy())/2
			level := 150.0 // the table the code lies on
			if p := image.Pt(int(u)+sb.Min.X, int(v)+sb.Min.Y); p.In(sb) {
				g := color.GrayModel.Convert(src.At(p.X, p.Y)).(color.Gray)
				level = 40 + float64(g.Y)*0.7
			}
			level *= 0.8 + 0.3*float64(x)/float64(side) // uneven light
			level += rng.NormFloat64() * 8
			out.SetGray(x, y, color.Gray{uint8(max(0, min(255, level)))})
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, out, &jpeg.Options{Quality: 70}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestQRPhoto: a photo-like picture of the code, scaled, turned and
// noisy, in JPEG, reads back as the token.
func TestQRPhoto(t *testing.T) {
	o, _ := sample(t)
	raw, err := o.QRPNG(400)
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct{ scale, angle float64 }{
		{1.37, 0}, {0.9, 7}, {1.6, -12}, {1.2, 90}, {1.1, 183},
	} {
		text, err := DecodeImage(bytes.NewReader(photo(t, raw, tc.scale, tc.angle, uint64(i))))
		if err != nil {
			t.Errorf("scale %v, turned %v°: %v", tc.scale, tc.angle, err)
			continue
		}
		if text != o.Text() {
			t.Errorf("scale %v, turned %v°: read another text", tc.scale, tc.angle)
		}
	}
}

func TestDecodeImageRefuses(t *testing.T) {
	blank := image.NewGray(image.Rect(0, 0, 64, 64))
	var buf bytes.Buffer
	png.Encode(&buf, blank)
	cases := map[string]struct {
		in   []byte
		want error
	}{
		"no code":      {buf.Bytes(), ErrNoQRCode},
		"not an image": {[]byte("GIF89a but not really"), nil},
		"too large":    {bytes.Repeat([]byte{0}, MaxImageSize+1), nil},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := DecodeImage(bytes.NewReader(tc.in))
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestQRTerminal(t *testing.T) {
	o, _ := sample(t)
	var buf bytes.Buffer
	o.QRTerminal(&buf)
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	if len(lines) < 20 || !strings.ContainsRune(buf.String(), '█') {
		t.Fatalf("terminal code of %d lines:\n%s", len(lines), buf.String())
	}
}
