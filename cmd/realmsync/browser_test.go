package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// The browser tests drive the web page in a real browser: Debian's
// chromium, through chromedp. Without chromium they skip, saying how to
// run them; with REALMSYNC_BROWSER_TESTS=require (as .ci/run sets) a
// missing browser fails them instead. Each step's screenshot is written
// to REALMSYNC_SCREENSHOTS, by default realmsync-screenshots in the
// temporary directory.

// findBrowser returns the path of a chromium, or skips the test.
func findBrowser(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	if os.Getenv("REALMSYNC_BROWSER_TESTS") == "require" {
		t.Fatal("no chromium on this machine, and REALMSYNC_BROWSER_TESTS=require")
	}
	t.Skip("no chromium on this machine: install it (apt-get install chromium) to run the browser tests")
	return ""
}

// browser is one browser session with its own profile.
type browser struct {
	t     *testing.T
	name  string
	ctx   context.Context
	shots string
	step  *int
}

func newBrowser(t *testing.T, exe, name, shots string, step *int) *browser {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1100, 760),
		chromedp.NoSandbox, // CI runs as root, where chromium's sandbox will not start
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first run starts the browser, which lives as long as the
	// context of that run: this one, with no timeout of its own.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("%s: start %s: %v", name, exe, err)
	}
	return &browser{t: t, name: name, ctx: ctx, shots: shots, step: step}
}

// do runs steps, failing the test if they take over a minute.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.shot("failed-" + strings.ReplaceAll(what, " ", "-"))
		b.t.Fatalf("%s: %s: %v", b.name, what, err)
	}
}

// text reads a string with an action, failing the test if it takes over
// a minute.
func (b *browser) text(what string, action chromedp.Action[string]) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	v, err := chromedp.Run(ctx, action)
	if err != nil {
		b.shot("failed-" + strings.ReplaceAll(what, " ", "-"))
		b.t.Fatalf("%s: %s: %v", b.name, what, err)
	}
	return v
}

// shot writes a screenshot of the page as it is.
func (b *browser) shot(what string) {
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("%s: screenshot %s: %v", b.name, what, err)
		return
	}
	*b.step++
	file := filepath.Join(b.shots, fmt.Sprintf("%02d-%s-%s.png", *b.step, b.name, what))
	if err := os.WriteFile(file, png, 0o644); err != nil {
		b.t.Logf("%s: screenshot: %v", b.name, err)
	}
}

// waitFor waits until a JavaScript expression is true.
func waitFor(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(30*time.Second))
}

// hasMessage is an expression that holds once the page shows a message.
func hasMessage(text string) string {
	q, _ := json.Marshal(text)
	return fmt.Sprintf(`[...document.querySelectorAll('#messages .text')].some(e => e.textContent === %s)`, q)
}

// TestBrowser plays the README's walkthrough on the web page: two daemons
// and two browser sessions. Alice creates a realm and an invite, Bob
// joins by pasting its token, each sees the other's messages arrive live,
// and when Alice removes Bob, Bob's page says he lost access.
func TestBrowser(t *testing.T) {
	exe := findBrowser(t)
	shots := os.Getenv("REALMSYNC_SCREENSHOTS")
	if shots == "" {
		shots = filepath.Join(os.TempDir(), "realmsync-screenshots")
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	old, _ := filepath.Glob(filepath.Join(shots, "*.png"))
	for _, f := range old {
		os.Remove(f)
	}
	t.Logf("screenshots in %s", shots)
	step := 0

	a, _ := startDaemon(t, "alice")
	b, _ := startDaemon(t, "bob")
	var bob struct {
		PeerID string `json:"peer_id"`
	}
	if err := json.Unmarshal([]byte(b.run("status", "--json")), &bob); err != nil {
		t.Fatal(err)
	}

	alice := newBrowser(t, exe, "alice", shots, &step)
	alice.do("sign in", chromedp.Navigate(strings.TrimSpace(a.run("open", "--print"))),
		chromedp.WaitVisible(chromedp.ID("app")))
	alice.do("leave no secret in sight",
		waitFor(`location.href === location.origin + '/' && !document.cookie.includes('realmsync_session')`))
	alice.shot("signed-in")
	// The sign-in link works once.
	link := strings.TrimSpace(a.run("open", "--print"))
	for i, want := range []int{http.StatusOK, http.StatusUnauthorized} {
		resp, err := http.Get(link)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("sign-in link, use %d: %s; want %d", i+1, resp.Status, want)
		}
	}

	alice.do("create a realm",
		chromedp.Click(chromedp.ID("new-realm")),
		chromedp.SendKeys(chromedp.ID("realm-name"), "kitchen"),
		chromedp.Click(chromedp.CSS(`#new-realm-form button[value="ok"]`)),
		waitFor(`document.getElementById('room-name').textContent === 'kitchen'`))
	alice.do("open an invite",
		chromedp.Click(chromedp.ID("invite")),
		chromedp.Click(chromedp.CSS(`#invite-form button[value="ok"]`)),
		chromedp.WaitVisible(chromedp.ID("inv-result")),
		waitFor(`document.getElementById('inv-qr').complete && document.getElementById('inv-qr').naturalWidth > 0`))
	token := alice.text("read the token", chromedp.Value(chromedp.ID("inv-token")))
	alice.shot("invite")
	if !strings.HasPrefix(token, "REALMSYNC-") {
		t.Fatalf("the invite dialog shows the token %q", token)
	}
	alice.do("close the invite", chromedp.Click(chromedp.CSS(`#invite-form button[value="cancel"]`)))

	bobs := newBrowser(t, exe, "bob", shots, &step)
	bobs.do("sign in", chromedp.Navigate(strings.TrimSpace(b.run("open", "--print"))),
		chromedp.WaitVisible(chromedp.ID("app")))
	bobs.do("paste a broken token",
		chromedp.Click(chromedp.ID("join")),
		chromedp.SendKeys(chromedp.ID("join-token"), "REALMSYNC-NOPE"),
		chromedp.Click(chromedp.ID("join-go")),
		waitFor(`document.querySelector('#join-form .error').textContent.includes('(invalid_token)')`))
	bobs.shot("refused")
	bobs.do("clear the token", chromedp.Evaluate[chromedp.Void](`document.getElementById('join-token').value = ''`),
		chromedp.Click(chromedp.CSS(`#join-form button[value="cancel"]`)))
	bobs.do("join by token",
		chromedp.Click(chromedp.ID("join")),
		waitFor(`document.querySelector('#join-form .error').hidden`),
		chromedp.SendKeys(chromedp.ID("join-token"), token),
		chromedp.Click(chromedp.ID("join-go")),
		waitFor(`document.getElementById('room-name').textContent === 'kitchen'`))
	bobs.shot("joined")
	alice.do("open and revoke another invite (Bob's is used up)",
		chromedp.Click(chromedp.ID("invite")),
		waitFor(`document.querySelectorAll('#inv-list button.danger').length === 0`),
		chromedp.Click(chromedp.CSS(`#invite-form button[value="ok"]`)),
		waitFor(`document.querySelectorAll('#inv-list button.danger').length === 1`),
		chromedp.Click(chromedp.CSS(`#inv-list button.danger`)),
		waitFor(`document.querySelectorAll('#inv-list button.danger').length === 0`),
		chromedp.Click(chromedp.CSS(`#invite-form button[value="cancel"]`)))

	alice.do("send", chromedp.SendKeys(chromedp.ID("text"), "dinner at eight?"+kb.Enter),
		waitFor(hasMessage("dinner at eight?")))
	bobs.do("see alice's message live", waitFor(hasMessage("dinner at eight?")))
	bobs.do("send", chromedp.SendKeys(chromedp.ID("text"), "yes, I'll bring bread"+kb.Enter))
	alice.do("see bob's message live", waitFor(hasMessage("yes, I'll bring bread")))
	alice.shot("chat")
	bobs.shot("chat")

	// While Alice looks at another realm, the kitchen counts what she
	// has not read.
	alice.do("look at another realm",
		chromedp.Click(chromedp.ID("new-realm")),
		chromedp.SendKeys(chromedp.ID("realm-name"), "attic"),
		chromedp.Click(chromedp.CSS(`#new-realm-form button[value="ok"]`)),
		waitFor(`document.getElementById('room-name').textContent === 'attic'`))
	bobs.do("send", chromedp.SendKeys(chromedp.ID("text"), "anyone?"+kb.Enter))
	kitchen := `[...document.querySelectorAll('#realms .realm')].find(b => b.querySelector('.name').textContent === 'kitchen')`
	alice.do("see one unread", waitFor(kitchen+`.querySelector('.unread')?.textContent === '1'`))
	alice.shot("unread")
	alice.do("go back to the kitchen", chromedp.Evaluate[chromedp.Void](kitchen+`.click()`),
		waitFor(hasMessage("anyone?")), waitFor(kitchen+`.querySelector('.unread') === null`))

	// Carol joins with a picture of a QR code, on a phone-sized screen;
	// Alice makes her a reader, and her page stops offering to write.
	c, _ := startDaemon(t, "carol")
	var carol struct {
		PeerID string `json:"peer_id"`
	}
	if err := json.Unmarshal([]byte(c.run("status", "--json")), &carol); err != nil {
		t.Fatal(err)
	}
	qr := filepath.Join(t.TempDir(), "invite.png")
	a.run("invite", "create", "kitchen", "--qr", qr)
	carols := newBrowser(t, exe, "carol", shots, &step)
	carols.do("sign in on a phone", chromedp.EmulateViewport(390, 800),
		chromedp.Navigate(strings.TrimSpace(c.run("open", "--print"))),
		chromedp.WaitVisible(chromedp.ID("app")))
	carols.do("join with a QR picture",
		chromedp.Click(chromedp.ID("menu")), // on a phone, the realms and their buttons are behind it
		chromedp.Click(chromedp.ID("join")),
		chromedp.SetUploadFiles(chromedp.ID("join-image"), []string{qr}),
		chromedp.Click(chromedp.ID("join-go")),
		waitFor(`document.getElementById('room-name').textContent === 'kitchen'`),
		waitFor(hasMessage("yes, I'll bring bread")),
		waitFor(`!document.getElementById('text').disabled`))
	carols.shot("joined-by-qr")
	carolRow := fmt.Sprintf(`#members li[data-peer="%s"]`, carol.PeerID)
	alice.do("make carol a reader",
		chromedp.Click(chromedp.ID("show-members")),
		chromedp.WaitVisible(chromedp.CSS(carolRow+" select")),
		chromedp.Evaluate[chromedp.Void](fmt.Sprintf(
			`(s => { s.value = 'reader'; s.dispatchEvent(new Event('change')); })(document.querySelector('%s select'))`, carolRow)))
	carols.do("see she is a reader", waitFor(`document.getElementById('room-role').textContent === 'reader'`),
		waitFor(`document.getElementById('text').disabled`))
	carols.shot("reader")

	peer := fmt.Sprintf(`#members li[data-peer="%s"]`, bob.PeerID)
	alice.do("remove bob",
		chromedp.Click(chromedp.ID("show-members")),
		chromedp.WaitVisible(chromedp.CSS(peer+" button.danger")),
		chromedp.Click(chromedp.CSS(peer+" button.danger")),
		chromedp.Click(chromedp.CSS(peer+" button.danger.confirm")),
		waitFor(fmt.Sprintf(`document.querySelector('%s') === null`, peer)))
	alice.shot("removed-bob")
	bobs.do("learn he lost access", waitFor(`!document.getElementById('lost').hidden`),
		waitFor(`document.getElementById('text').disabled`))
	bobs.shot("lost-access")
}
