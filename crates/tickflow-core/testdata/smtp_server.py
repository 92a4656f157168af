"""An SMTP server for tickflow's e-mail tests, on aiosmtpd.

    python3 smtp_server.py DIR PORT [starttls|tls USER PASSWORD]

Each message it accepts is written whole to DIR/NNNNN.eml, numbered in arrival order. While
a file DIR/refuse exists it answers 451 (try again later); while DIR/reject exists, 550.
DIR/ready appears once it listens.

With `starttls` (STARTTLS required before anything else) or `tls` (TLS from the first
byte), it makes a private CA and a certificate for 127.0.0.1 and localhost signed by it
(with the openssl command), writes the CA to DIR/ca.pem, and asks for a login as USER with
PASSWORD before it takes mail.
"""

import logging
import os
import ssl
import subprocess
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Handler:
    def __init__(self, root):
        self.root = root
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        if os.path.exists(os.path.join(self.root, "refuse")):
            return "451 4.3.0 Try again later"
        if os.path.exists(os.path.join(self.root, "reject")):
            return "550 5.7.1 Refused"
        self.count += 1
        path = os.path.join(self.root, f"{self.count:05}.eml")
        with open(path + ".tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(path + ".tmp", path)
        return "250 OK"


def certificates(root):
    """A CA and a server certificate it signed, for 127.0.0.1 and localhost."""
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)
    ca_key, ca = os.path.join(root, "ca.key"), os.path.join(root, "ca.pem")
    key, csr, cert = (os.path.join(root, n) for n in ("server.key", "server.csr", "server.pem"))
    ext = os.path.join(root, "server.ext")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
        "-days", "2", "-subj", "/CN=tickflow test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
        "-subj", "/CN=localhost")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-out", cert, "-days", "2", "-extfile", ext)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def main():
    root, port = sys.argv[1], int(sys.argv[2])
    # What the server saw, for a test that fails to read.
    if os.environ.get("SMTP_SERVER_LOG"):
        logging.basicConfig(filename=os.environ["SMTP_SERVER_LOG"], level=logging.DEBUG)
    mode = sys.argv[3] if len(sys.argv) > 3 else "plain"
    kwargs = {}
    if mode in ("starttls", "tls"):
        user, password = sys.argv[4].encode(), sys.argv[5].encode()

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = isinstance(auth_data, LoginPassword) and (
                auth_data.login == user and auth_data.password == password)
            # Not handled here: aiosmtpd answers 235, or 535 on a wrong login.
            return AuthResult(success=ok, handled=False)

        context = certificates(root)
        kwargs = {"authenticator": authenticator, "auth_required": True}
        if mode == "starttls":
            kwargs.update(tls_context=context, require_starttls=True)
        else:
            # aiosmtpd counts only STARTTLS as TLS; here the whole connection is.
            kwargs.update(ssl_context=context, auth_require_tls=False)
    controller = Controller(Handler(root), hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    open(os.path.join(root, "ready"), "w").close()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
