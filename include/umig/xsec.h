/*
 * xsec.h - who may take part in a migration: the TLS 1.3 credentials of
 * every connection (tcp/tls.c).
 *
 * A migration carries a guest's whole memory, so every connection
 * (control, bulk, urgent, and the reconnections of the handover and of
 * post-copy recovery) runs TLS 1.3 from its first byte when credentials
 * are given, with either
 *   - a pre-shared key (--auth-key FILE, made by `umig keygen FILE`):
 *     both ends prove they hold the same 256-bit key (TLS 1.3 PSK with
 *     (EC)DHE, so a later leak of the key does not reveal past streams);
 *   - X.509 certificates (--tls-creds DIR, QEMU's file names): the
 *     destination is the TLS server (server-cert.pem, server-key.pem),
 *     the source the client (client-cert.pem, client-key.pem), both
 *     chained to ca-cert.pem.  The source checks that the destination's
 *     certificate is signed by the CA and names the host it connects to
 *     (a DNS name or IP address in subjectAltName); the destination
 *     requires a client certificate signed by the CA (any such
 *     certificate is accepted: the CA decides who may migrate here).
 * Private keys readable by group or others are refused.
 *
 * NULL credentials mean plaintext, which only loopback addresses get
 * unless --insecure says otherwise (xsec_check_addr).
 *
 * Ownership: xsec_load() allocates, xsec_free() frees; one xsec may be
 * shared by any number of connections and threads (read only).
 */
#ifndef UMIG_XSEC_H
#define UMIG_XSEC_H

#include <stdbool.h>

struct xsec;

#define XSEC_KEY_BYTES 32

/*
 * Load credentials: key_file (PSK) or creds_dir (X.509), not both; both
 * NULL or "" gives *out = NULL (plaintext) and 0.  server: the
 * destination's side.  -errno with err_set() naming the file and the fix.
 */
int xsec_load(struct xsec **out, const char *key_file, const char *creds_dir, bool server);
void xsec_free(struct xsec *s);
/* "psk", "x509" or "none" (NULL). */
const char *xsec_kind(const struct xsec *s);
/*
 * Plaintext is for loopback: a host that resolves to anything else needs
 * credentials, or insecure (then a warning saying why is printed).  who:
 * "incoming" or "migration", for the messages.
 */
int xsec_check_addr(const struct xsec *s, const char *host, bool insecure, const char *who);
/*
 * TLS covers the control connection only: RDMA page data travels in clear.
 * Where TLS is in force (s set) and the transport is rdma, that needs the
 * explicit plaintext_pages (--rdma-plaintext-pages): -EPERM naming the flag
 * without it, a warning saying what is exposed with it.  Checked before any
 * RDMA device is touched.  who: "incoming" or "migration".
 */
int xsec_check_rdma(const struct xsec *s, const char *transport, bool plaintext_pages,
		    const char *who);
/* Write a new random key to path, mode 0600; refuses to overwrite. */
int xsec_keygen(const char *path);
/* -EPERM with a message when path is readable or writable by group or others. */
int xsec_check_private(const char *path, const char *what);

#endif
