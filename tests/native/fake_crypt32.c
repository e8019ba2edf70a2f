/*
 * A fake crypt32 for the tests: the seven certificate-store functions the agent calls, with
 * the types of 64-bit Windows (32-bit DWORD and BOOL, pointer-sized handles, the CERT_CONTEXT
 * layout of wincrypt.h) and the contracts documented for them on learn.microsoft.com:
 *
 * - CertOpenStore(CERT_STORE_PROV_SYSTEM_W, ...): the store name is a UTF-16 string; the high
 *   word of dwFlags is the location. Without CERT_STORE_OPEN_EXISTING_FLAG a missing store is
 *   created (as Windows does); with it the call fails with ERROR_FILE_NOT_FOUND.
 *   CERT_STORE_READONLY_FLAG makes adds and deletes fail with E_ACCESSDENIED.
 * - CertEnumCertificatesInStore and CertFindCertificateInStore free a non-NULL previous context,
 *   even when they fail; their end is NULL with CRYPT_E_NOT_FOUND.
 * - CertDeleteCertificateFromStore frees its context, even when it fails.
 * - CertCloseStore: the memory of a store handle lives until its last context is freed.
 *
 * "The calling thread's last error" is errno: ctypes' use_errno keeps a private copy of it
 * around each foreign call exactly as use_last_error does with GetLastError on Windows, so
 * ctypes.get_errno() plays ctypes.get_last_error(). As on Windows, a call that succeeds
 * leaves the last error as it was.
 *
 * Test hooks (fake_*): stores live in memory; open handles, live contexts and API misuse
 * (double close, a freed or foreign context) are counted; fake_inject makes a function fail.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef uint32_t DWORD;
typedef int32_t BOOL;
typedef unsigned char BYTE;
typedef uint16_t WCHAR; /* UTF-16, as on Windows (Linux's wchar_t is 32 bits) */
typedef void *HCERTSTORE;

typedef struct {
    DWORD dwCertEncodingType;
    BYTE *pbCertEncoded;
    DWORD cbCertEncoded;
    void *pCertInfo;
    HCERTSTORE hCertStore;
} CERT_CONTEXT;

typedef struct {
    DWORD cbData;
    BYTE *pbData;
} CRYPT_HASH_BLOB;

_Static_assert(sizeof(DWORD) == 4 && sizeof(BOOL) == 4, "Windows DWORD/BOOL are 32 bits");
_Static_assert(sizeof(CERT_CONTEXT) == 40, "CERT_CONTEXT on 64-bit Windows");
_Static_assert(sizeof(CRYPT_HASH_BLOB) == 16, "CRYPT_HASH_BLOB on 64-bit Windows");

#define EXPORT __attribute__((visibility("default")))

#define CERT_STORE_PROV_SYSTEM_W 10
#define X509_ASN_ENCODING 0x00000001u
#define CERT_STORE_OPEN_EXISTING_FLAG 0x00004000u
#define CERT_STORE_READONLY_FLAG 0x00008000u
#define CERT_SYSTEM_STORE_LOCATION_MASK 0x00FF0000u
#define CERT_STORE_ADD_NEW 1
#define CERT_STORE_ADD_USE_EXISTING 2
#define CERT_STORE_ADD_REPLACE_EXISTING 3
#define CERT_STORE_ADD_ALWAYS 4
#define CERT_FIND_ANY 0u
#define CERT_FIND_SHA1_HASH 0x00010000u
#define CERT_CLOSE_STORE_CHECK_FLAG 2u

#define ERROR_FILE_NOT_FOUND 2u
#define ERROR_INVALID_HANDLE 6u
#define E_ACCESSDENIED 0x80070005u
#define E_INVALIDARG 0x80070057u
#define E_NOTIMPL 0x80004001u
#define CRYPT_E_NOT_FOUND 0x80092004u
#define CRYPT_E_EXISTS 0x80092005u
#define CRYPT_E_PENDING_CLOSE 0x8009200Fu
#define CRYPT_E_ASN1_BADTAG 0x8009310Bu

#define MAX_STORES 32
#define MAX_CERTS 256
#define MAX_NAME 128
#define MAX_INJECT 16

/* ---- SHA-1 (FIPS 180-4), for CERT_FIND_SHA1_HASH ------------------------------------ */

static uint32_t rol(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1(const BYTE *data, size_t len, BYTE out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t total = ((len + 8) / 64 + 1) * 64;
    BYTE *msg = calloc(total, 1);
    memcpy(msg, data, len);
    msg[len] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) msg[total - 1 - i] = (BYTE)(bits >> (8 * i));
    for (size_t off = 0; off < total; off += 64) {
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)msg[off + 4 * i] << 24 | (uint32_t)msg[off + 4 * i + 1] << 16 |
                   (uint32_t)msg[off + 4 * i + 2] << 8 | msg[off + 4 * i + 3];
        for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) f = (b & c) | (~b & d), k = 0x5A827999;
            else if (i < 40) f = b ^ c ^ d, k = 0x6ED9EBA1;
            else if (i < 60) f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
            else f = b ^ c ^ d, k = 0xCA62C1D6;
            uint32_t t = rol(a, 5) + f + e + k + w[i];
            e = d, d = c, c = rol(b, 30), b = a, a = t;
        }
        h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
    }
    free(msg);
    for (int i = 0; i < 20; i++) out[i] = (BYTE)(h[i / 4] >> (24 - 8 * (i % 4)));
}

/* ---- the in-memory stores --------------------------------------------------------------- */

typedef struct {
    uint64_t id; /* insertion order: what an enumeration follows */
    BYTE *der;
    DWORD len;
    BYTE hash[20];
} Cert;

typedef struct {
    int used;
    DWORD location; /* CERT_SYSTEM_STORE_* (already shifted) */
    char name[MAX_NAME];
    Cert certs[MAX_CERTS];
    int count;
} Store;

#define HANDLE_MAGIC 0x53544F52u /* "STOR" */
#define CONTEXT_MAGIC 0x43545854u /* "CTXT" */

typedef struct {
    DWORD magic;
    Store *store;
    int read_only;
    int closed;
    int contexts; /* live contexts referring to this handle */
} Handle;

typedef struct {
    CERT_CONTEXT pub; /* first: the pointer handed out is the CERT_CONTEXT */
    DWORD magic;
    Handle *handle;
    uint64_t cert_id;
} Context;

typedef struct {
    char func[64];
    int skip;  /* calls that still succeed first */
    int times; /* then this many fail */
    DWORD error;
} Injection;

static Store stores[MAX_STORES];
static uint64_t next_id = 1;
static int open_handles, live_contexts, misuse;
static DWORD last_open_flags;
static Injection injections[MAX_INJECT];

static void set_last_error(DWORD code) { errno = (int)code; }

static int injected(const char *func, DWORD *error) {
    for (int i = 0; i < MAX_INJECT; i++) {
        Injection *inj = &injections[i];
        if (inj->times <= 0 || strcmp(inj->func, func) != 0) continue;
        if (inj->skip > 0) {
            inj->skip--;
            return 0;
        }
        inj->times--;
        *error = inj->error;
        return 1;
    }
    return 0;
}

static int same_name(const char *a, const char *b) {
    for (; *a && *b; a++, b++) {
        char x = (*a >= 'a' && *a <= 'z') ? (char)(*a - 32) : *a;
        char y = (*b >= 'a' && *b <= 'z') ? (char)(*b - 32) : *b;
        if (x != y) return 0;
    }
    return *a == *b;
}

static Store *find_store(DWORD location, const char *name) {
    for (int i = 0; i < MAX_STORES; i++)
        if (stores[i].used && stores[i].location == location && same_name(stores[i].name, name))
            return &stores[i];
    return NULL;
}

static Store *create_store(DWORD location, const char *name) {
    Store *s = find_store(location, name);
    if (s) return s;
    for (int i = 0; i < MAX_STORES; i++) {
        if (!stores[i].used) {
            memset(&stores[i], 0, sizeof(Store));
            stores[i].used = 1;
            stores[i].location = location;
            strncpy(stores[i].name, name, MAX_NAME - 1);
            return &stores[i];
        }
    }
    return NULL;
}

static int cert_index(Store *s, uint64_t id) {
    for (int i = 0; i < s->count; i++)
        if (s->certs[i].id == id) return i;
    return -1;
}

static Handle *as_handle(HCERTSTORE h) {
    Handle *handle = (Handle *)h;
    if (!handle || handle->magic != HANDLE_MAGIC || handle->closed) {
        misuse++;
        return NULL;
    }
    return handle;
}

static Context *as_context(const CERT_CONTEXT *c) {
    Context *ctx = (Context *)c;
    if (!ctx || ctx->magic != CONTEXT_MAGIC) {
        misuse++;
        return NULL;
    }
    return ctx;
}

static CERT_CONTEXT *new_context(Handle *handle, const Cert *cert) {
    Context *ctx = calloc(1, sizeof(Context));
    ctx->magic = CONTEXT_MAGIC;
    ctx->handle = handle;
    ctx->cert_id = cert->id;
    ctx->pub.dwCertEncodingType = X509_ASN_ENCODING;
    ctx->pub.pbCertEncoded = malloc(cert->len);
    memcpy(ctx->pub.pbCertEncoded, cert->der, cert->len);
    ctx->pub.cbCertEncoded = cert->len;
    ctx->pub.hCertStore = handle;
    handle->contexts++;
    live_contexts++;
    return &ctx->pub;
}

static void release_handle(Handle *handle) {
    if (handle->closed && handle->contexts == 0) {
        handle->magic = 0;
        free(handle);
    }
}

static void free_context(Context *ctx) {
    Handle *handle = ctx->handle;
    ctx->magic = 0;
    free(ctx->pub.pbCertEncoded);
    free(ctx);
    live_contexts--;
    handle->contexts--;
    release_handle(handle);
}

/* The context after which an enumeration or a search continues (NULL: from the start), freed
   as the documentation says; *ok is 0 when it was not a valid context of this store. */
static uint64_t consume_previous(Handle *handle, const CERT_CONTEXT *prev, int *ok) {
    *ok = 1;
    if (!prev) return 0;
    Context *ctx = as_context(prev);
    if (!ctx) {
        *ok = 0;
        return 0;
    }
    uint64_t after = ctx->cert_id;
    if (ctx->handle != handle) *ok = 0;
    free_context(ctx);
    return after;
}

static void utf16_to_ascii(const WCHAR *in, char *out, size_t cap) {
    size_t i = 0;
    for (; in[i] && i + 1 < cap; i++) out[i] = in[i] < 128 ? (char)in[i] : '?';
    out[i] = 0;
}

/* ---- the crypt32 functions ---------------------------------------------------------------- */

EXPORT HCERTSTORE CertOpenStore(const char *provider, DWORD encoding, void *prov, DWORD flags,
                                const void *para) {
    int saved = errno;
    DWORD error;
    (void)encoding;
    (void)prov;
    last_open_flags = flags;
    if (injected("CertOpenStore", &error)) return set_last_error(error), NULL;
    if ((uintptr_t)provider != CERT_STORE_PROV_SYSTEM_W || !para)
        return set_last_error(E_INVALIDARG), NULL;
    DWORD location = flags & CERT_SYSTEM_STORE_LOCATION_MASK;
    if (location != 0x00020000u && location != 0x00050000u && location != 0x00060000u)
        return set_last_error(E_INVALIDARG), NULL;
    char name[MAX_NAME];
    utf16_to_ascii((const WCHAR *)para, name, sizeof name);
    Store *store = find_store(location, name);
    if (!store) {
        if (flags & CERT_STORE_OPEN_EXISTING_FLAG) return set_last_error(ERROR_FILE_NOT_FOUND), NULL;
        store = create_store(location, name);
        if (!store) return set_last_error(E_INVALIDARG), NULL;
    }
    Handle *handle = calloc(1, sizeof(Handle));
    handle->magic = HANDLE_MAGIC;
    handle->store = store;
    handle->read_only = (flags & CERT_STORE_READONLY_FLAG) != 0;
    open_handles++;
    errno = saved;
    return handle;
}

EXPORT BOOL CertCloseStore(HCERTSTORE h, DWORD flags) {
    int saved = errno;
    if (!h) return 1; /* documented: closing NULL is a no-op */
    Handle *handle = as_handle(h);
    if (!handle) return set_last_error(ERROR_INVALID_HANDLE), 0;
    handle->closed = 1;
    open_handles--;
    int pending = handle->contexts > 0;
    release_handle(handle);
    if (pending && (flags & CERT_CLOSE_STORE_CHECK_FLAG))
        return set_last_error(CRYPT_E_PENDING_CLOSE), 0;
    errno = saved;
    return 1;
}

EXPORT BOOL CertAddEncodedCertificateToStore(HCERTSTORE h, DWORD encoding, const BYTE *der,
                                             DWORD len, DWORD disposition,
                                             const CERT_CONTEXT **out) {
    int saved = errno;
    DWORD error;
    if (out) *out = NULL;
    Handle *handle = as_handle(h);
    if (!handle) return set_last_error(ERROR_INVALID_HANDLE), 0;
    if (injected("CertAddEncodedCertificateToStore", &error)) return set_last_error(error), 0;
    if (!(encoding & X509_ASN_ENCODING) || !der) return set_last_error(E_INVALIDARG), 0;
    if (len < 2 || der[0] != 0x30) return set_last_error(CRYPT_E_ASN1_BADTAG), 0;
    if (disposition < CERT_STORE_ADD_NEW || disposition > CERT_STORE_ADD_ALWAYS)
        return set_last_error(E_INVALIDARG), 0;
    if (handle->read_only) return set_last_error(E_ACCESSDENIED), 0;
    Store *s = handle->store;
    BYTE hash[20];
    sha1(der, len, hash);
    int found = -1;
    for (int i = 0; i < s->count; i++)
        if (!memcmp(s->certs[i].hash, hash, 20)) found = i;
    if (found >= 0 && disposition == CERT_STORE_ADD_NEW) return set_last_error(CRYPT_E_EXISTS), 0;
    Cert *cert;
    if (found >= 0 && disposition != CERT_STORE_ADD_ALWAYS) {
        cert = &s->certs[found];
        if (disposition == CERT_STORE_ADD_REPLACE_EXISTING) {
            free(cert->der);
            cert->der = malloc(len);
            memcpy(cert->der, der, len);
            cert->len = len;
        }
    } else {
        if (s->count == MAX_CERTS) return set_last_error(E_INVALIDARG), 0;
        cert = &s->certs[s->count++];
        cert->id = next_id++;
        cert->der = malloc(len);
        memcpy(cert->der, der, len);
        cert->len = len;
        memcpy(cert->hash, hash, 20);
    }
    if (out) *out = new_context(handle, cert);
    errno = saved;
    return 1;
}

EXPORT const CERT_CONTEXT *CertEnumCertificatesInStore(HCERTSTORE h, const CERT_CONTEXT *prev) {
    int saved = errno;
    DWORD error;
    Handle *handle = as_handle(h);
    if (!handle) return set_last_error(ERROR_INVALID_HANDLE), NULL;
    int ok;
    uint64_t after = consume_previous(handle, prev, &ok);
    if (!ok) return set_last_error(E_INVALIDARG), NULL;
    if (injected("CertEnumCertificatesInStore", &error)) return set_last_error(error), NULL;
    Store *s = handle->store;
    for (int i = 0; i < s->count; i++) {
        if (s->certs[i].id > after) {
            errno = saved;
            return new_context(handle, &s->certs[i]);
        }
    }
    return set_last_error(CRYPT_E_NOT_FOUND), NULL;
}

EXPORT const CERT_CONTEXT *CertFindCertificateInStore(HCERTSTORE h, DWORD encoding, DWORD find_flags,
                                                      DWORD find_type, const void *para,
                                                      const CERT_CONTEXT *prev) {
    int saved = errno;
    DWORD error;
    (void)find_flags;
    Handle *handle = as_handle(h);
    if (!handle) return set_last_error(ERROR_INVALID_HANDLE), NULL;
    int ok;
    uint64_t after = consume_previous(handle, prev, &ok);
    if (!ok) return set_last_error(E_INVALIDARG), NULL;
    if (injected("CertFindCertificateInStore", &error)) return set_last_error(error), NULL;
    if (!(encoding & X509_ASN_ENCODING)) return set_last_error(E_INVALIDARG), NULL;
    const CRYPT_HASH_BLOB *blob = para;
    if (find_type == CERT_FIND_SHA1_HASH) {
        if (!blob || blob->cbData != 20 || !blob->pbData) return set_last_error(E_INVALIDARG), NULL;
    } else if (find_type != CERT_FIND_ANY) {
        return set_last_error(E_NOTIMPL), NULL;
    }
    Store *s = handle->store;
    for (int i = 0; i < s->count; i++) {
        if (s->certs[i].id <= after) continue;
        if (find_type == CERT_FIND_ANY || !memcmp(s->certs[i].hash, blob->pbData, 20)) {
            errno = saved;
            return new_context(handle, &s->certs[i]);
        }
    }
    return set_last_error(CRYPT_E_NOT_FOUND), NULL;
}

EXPORT BOOL CertDeleteCertificateFromStore(const CERT_CONTEXT *c) {
    int saved = errno;
    DWORD error;
    Context *ctx = as_context(c);
    if (!ctx) return set_last_error(E_INVALIDARG), 0;
    Handle *handle = ctx->handle;
    uint64_t id = ctx->cert_id;
    int read_only = handle->read_only;
    Store *s = handle->store;
    free_context(ctx); /* "always frees pCertContext ... even if an error is encountered" */
    if (injected("CertDeleteCertificateFromStore", &error)) return set_last_error(error), 0;
    if (read_only) return set_last_error(E_ACCESSDENIED), 0;
    int i = cert_index(s, id);
    if (i >= 0) {
        free(s->certs[i].der);
        memmove(&s->certs[i], &s->certs[i + 1], (size_t)(s->count - i - 1) * sizeof(Cert));
        s->count--;
    }
    errno = saved;
    return 1;
}

EXPORT BOOL CertFreeCertificateContext(const CERT_CONTEXT *c) {
    int saved = errno;
    if (c) {
        Context *ctx = as_context(c);
        if (ctx) free_context(ctx);
    }
    errno = saved;
    return 1; /* documented: always returns nonzero */
}

/* ---- test hooks ------------------------------------------------------------------------- */

EXPORT void fake_reset(void) {
    for (int i = 0; i < MAX_STORES; i++) {
        for (int j = 0; j < stores[i].count; j++) free(stores[i].certs[j].der);
        stores[i].used = 0;
        stores[i].count = 0;
    }
    memset(injections, 0, sizeof injections);
    open_handles = live_contexts = misuse = 0;
    last_open_flags = 0;
}

EXPORT int fake_create_store(DWORD location, const char *name) {
    return create_store(location, name) != NULL;
}

EXPORT int fake_store_exists(DWORD location, const char *name) {
    return find_store(location, name) != NULL;
}

EXPORT int fake_store_count(DWORD location, const char *name) {
    Store *s = find_store(location, name);
    return s ? s->count : -1;
}

/* Copies the DER of the index-th certificate into out; returns its length (0: no such one). */
EXPORT DWORD fake_store_cert(DWORD location, const char *name, int index, BYTE *out, DWORD cap) {
    Store *s = find_store(location, name);
    if (!s || index < 0 || index >= s->count || s->certs[index].len > cap) return 0;
    memcpy(out, s->certs[index].der, s->certs[index].len);
    return s->certs[index].len;
}

EXPORT int fake_open_handles(void) { return open_handles; }
EXPORT int fake_live_contexts(void) { return live_contexts; }
EXPORT int fake_misuse(void) { return misuse; }
EXPORT DWORD fake_last_open_flags(void) { return last_open_flags; }

/* After `skip` more calls that succeed, the next `times` calls of `func` fail with `error`. */
EXPORT int fake_inject(const char *func, int skip, int times, DWORD error) {
    for (int i = 0; i < MAX_INJECT; i++) {
        if (injections[i].times <= 0) {
            strncpy(injections[i].func, func, sizeof injections[i].func - 1);
            injections[i].skip = skip;
            injections[i].times = times;
            injections[i].error = error;
            return 1;
        }
    }
    return 0;
}
