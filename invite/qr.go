package invite

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	_ "image/jpeg" // photos of a QR code
	_ "image/png"  // screenshots and our own PNGs
	"io"

	"github.com/makiuchi-d/gozxing"
	zxqr "github.com/makiuchi-d/gozxing/qrcode"
	"github.com/mdp/qrterminal/v3"
	"github.com/skip2/go-qrcode"
)

// Limits on an image that DecodeImage reads: its file size, and its size
// in pixels, checked from the header before the pixels are decoded.
const (
	MaxImageSize   = 16 << 20 // bytes
	MaxImagePixels = 40 << 20 // width × height
)

// QRPNG returns the offer as a QR code in a PNG image about size pixels
// wide, at medium error correction (a code still reads with 15% of it
// damaged or covered).
func (o *Offer) QRPNG(size int) ([]byte, error) {
	png, err := qrcode.Encode(o.Text(), qrcode.Medium, size)
	if err != nil {
		return nil, fmt.Errorf("qr code: %w", err)
	}
	return png, nil
}

// QRTerminal draws the offer as a QR code in a terminal, two rows of
// modules per line of text.
func (o *Offer) QRTerminal(w io.Writer) {
	qrterminal.GenerateWithConfig(o.Text(), qrterminal.Config{
		Level:          qrterminal.M,
		Writer:         w,
		HalfBlocks:     true,
		BlackChar:      qrterminal.BLACK_BLACK,
		WhiteBlackChar: qrterminal.WHITE_BLACK,
		WhiteChar:      qrterminal.WHITE_WHITE,
		BlackWhiteChar: qrterminal.BLACK_WHITE,
		QuietZone:      2,
	})
}

// ErrNoQRCode is returned by DecodeImage for an image in which no QR code
// could be read.
var ErrNoQRCode = errors.New("no QR code found in the image")

// DecodeImage reads the text of a QR code from a PNG or JPEG image: a
// screenshot, or a photo of a screen or of paper. A code that is not read
// at first is tried again turned by a quarter, a half and three quarters:
// the decoder misses a few codes in one orientation that it reads in
// another.
func DecodeImage(r io.Reader) (string, error) {
	raw, err := io.ReadAll(io.LimitReader(r, MaxImageSize+1))
	if err != nil {
		return "", fmt.Errorf("read image: %w", err)
	}
	if len(raw) > MaxImageSize {
		return "", fmt.Errorf("read image: larger than %d bytes", MaxImageSize)
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(raw))
	if err != nil {
		return "", fmt.Errorf("read image: %w", err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width*cfg.Height > MaxImagePixels {
		return "", fmt.Errorf("read image: %d×%d pixels, more than %d", cfg.Width, cfg.Height, MaxImagePixels)
	}
	img, _, err := image.Decode(bytes.NewReader(raw))
	if err != nil {
		return "", fmt.Errorf("read image: %w", err)
	}
	for turn := range 4 {
		if text, err := readQR(img); err == nil {
			return text, nil
		}
		if turn < 3 {
			img = rotate(img)
		}
	}
	return "", ErrNoQRCode
}

func readQR(img image.Image) (string, error) {
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		return "", err
	}
	hints := map[gozxing.DecodeHintType]any{gozxing.DecodeHintType_TRY_HARDER: true}
	res, err := zxqr.NewQRCodeReader().Decode(bmp, hints)
	if err != nil {
		return "", err
	}
	return res.GetText(), nil
}

// rotate turns an image by a quarter, clockwise.
func rotate(img image.Image) image.Image {
	b := img.Bounds()
	out := image.NewRGBA(image.Rect(0, 0, b.Dy(), b.Dx()))
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			out.Set(b.Max.Y-1-y, x-b.Min.X, img.At(x, y))
		}
	}
	return out
}
