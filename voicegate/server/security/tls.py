"""TLS on the node's own port: one ``ssl.SSLContext`` per gateway process.

TLS 1.2 is the oldest version offered (1.0 and 1.1 are refused at the handshake), with
OpenSSL's default server ciphers for those versions (forward secrecy, AEAD). Client
certificates are verified against ``security.ssl_ca_certs`` when
``security.ssl_client_cert`` is ``optional`` or ``required`` (mutual TLS behind a proxy).

``reload`` loads the certificate chain again into the same context: connections that
are open keep the session they negotiated, every new handshake gets the new certificate.
The gateways call it on SIGHUP (the supervisor forwards its own SIGHUP to them, which is
what ``systemctl reload`` sends), so a renewed certificate needs no restart and drops no
call.
"""

from __future__ import annotations

import ssl

from voicegate.core.config import SecuritySettings

_CERT_REQS = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


class TlsError(ValueError):
    """A certificate, key or CA file that cannot be used; the message names it."""


def server_context(settings: SecuritySettings) -> ssl.SSLContext:
    """The context of ``settings`` (which must have a certificate)."""
    if settings.ssl_certfile is None:
        raise TlsError("security.ssl_certfile is not set")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= ssl.OP_SINGLE_ECDH_USE
    load_chain(context, settings)
    if settings.ssl_ca_certs is not None:
        try:
            context.load_verify_locations(cafile=str(settings.ssl_ca_certs))
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"security.ssl_ca_certs {settings.ssl_ca_certs}: {_why(exc)}") from None
    context.verify_mode = _CERT_REQS[settings.ssl_client_cert]
    return context


def load_chain(context: ssl.SSLContext, settings: SecuritySettings) -> None:
    try:
        context.load_cert_chain(str(settings.ssl_certfile), str(settings.ssl_keyfile))
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(
            f"security.ssl_certfile {settings.ssl_certfile} / security.ssl_keyfile "
            f"{settings.ssl_keyfile}: {_why(exc)}"
        ) from None


def reload(context: ssl.SSLContext, settings: SecuritySettings) -> None:
    """New certificate for new handshakes; on error the old one stays (and this raises)."""
    # Load into a scratch context first: a failed load_cert_chain may leave the live
    # context with a half-replaced chain.
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    load_chain(probe, settings)
    load_chain(context, settings)
    if settings.ssl_ca_certs is not None:
        try:
            context.load_verify_locations(cafile=str(settings.ssl_ca_certs))
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"security.ssl_ca_certs {settings.ssl_ca_certs}: {_why(exc)}") from None


def _why(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return exc.strerror or str(exc)
