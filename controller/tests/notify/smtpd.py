"""A real SMTP server for the notification tests (Debian's python3-aiosmtpd).

Usage: smtpd.py CERT KEY PORT OUT
Requires STARTTLS, then AUTH as vigie / s3cret; appends each message received to OUT
(as raw RFC 5322 bytes, separated by a line holding only "=== end ===").
"""

import ssl
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

cert, key, port, out = sys.argv[1:5]
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)


class Handler:
    async def handle_DATA(self, server, session, envelope):
        with open(out, "ab") as f:
            f.write(b"MAIL FROM: " + envelope.mail_from.encode() + b"\n")
            f.write(b"RCPT TO: " + ",".join(envelope.rcpt_tos).encode() + b"\n")
            f.write(envelope.content + b"\n=== end ===\n")
        return "250 OK"


def authenticate(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == b"vigie"
        and auth_data.password == b"s3cret"
    )
    return AuthResult(success=ok)


controller = Controller(
    Handler(),
    hostname="127.0.0.1",
    port=int(port),
    tls_context=context,
    require_starttls=True,
    auth_required=True,
    authenticator=authenticate,
    server_hostname="localhost",
)
controller.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
