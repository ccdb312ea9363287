// Package invite is realmsync's offer: the invitation to a realm that a
// member hands to someone as text or as a QR code, the PermissionOffer
// of Realm without Realm's server. An admin signs an offer with its node
// key; the invitee's node dials one of the nodes the offer names and
// presents it; any admin node that holds the realm checks it against the
// realm's log and admits the invitee.
//
// This package builds, signs, encodes, parses and verifies offers, and
// draws and reads their QR codes. What an offer is worth (is the issuer
// still an admin, are uses left, was it revoked) is a question for the
// realm's log, which the node that honours the offer asks.
//
// # The binary form
//
// All integers are big-endian.
//
//	offset  size  field
//	0       1     version, 1
//	1       32    realm id (the hash of the realm's genesis op)
//	33      1     n, the length of the realm name (at most 64)
//	34      n     realm name, UTF-8
//	        1     role offered: 1 reader, 2 writer, 3 admin
//	        16    offer id, random
//	        32    issuer: the ed25519 public key of the issuing node
//	        8     issued at, Unix seconds
//	        8     expires at, Unix seconds, after issued at
//	        2     max uses, at least 1
//	        1     k, the number of nodes that can honour it (1 to 4)
//	        ...   k nodes, the issuer first:
//	                32  node key (left out for the first node: the issuer)
//	                1   m, its number of addresses (1 to 4)
//	                ... m addresses, each a length byte (at most 64) and
//	                    a binary multiaddr without a /p2p/ part
//	        64    ed25519 signature by the issuer over the string
//	              "realmsync offer v1", a zero byte, and every byte above
//
// A whole offer is at most 1024 bytes; one naming three nodes with four
// addresses between them is about 300.
//
// # The text form
//
// "REALMSYNC-" followed by the binary form in base32 (RFC 4648, no
// padding). Every character is in the QR code's alphanumeric mode (so the
// code stays small) and none means anything to a shell or a chat app. An
// offer of 300 bytes is 490 characters. Parse forgives surrounding space
// and lower case, and refuses anything that is not the exact text of a
// well-formed offer, so any changed character is refused by Parse or by
// Verify.
//
// # The acceptance handshake
//
// Over AcceptProtocol the invitee writes one Request (the binary offer,
// its display name, its chain head in the realm) and closes its side; the
// honouring node answers with one Response: the realm, the role and every
// epoch key of the realm it holds, or a refusal's code and detail. Both
// are length-prefixed binary with the limits MaxRequestSize and
// MaxResponseSize; see accept.go for the layouts.
//
// # Errors
//
// Every refusal wraps one of the Err values of this package, and Code
// gives its stable code: invalid_token, bad_signature, expired, used_up,
// revoked, not_permitted, already_member, unreachable.
package invite
