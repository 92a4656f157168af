"""An SMTP server for tickflow's e-mail tests, on aiosmtpd.

    python3 smtp_server.py DIR PORT

Each message it accepts is written whole to DIR/NNNNN.eml, numbered in arrival order. While
a file DIR/refuse exists it answers 451 (try again later); while DIR/reject exists, 550.
DIR/ready appears once it listens.
"""

import os
import sys
import time

from aiosmtpd.controller import Controller


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


def main():
    root, port = sys.argv[1], int(sys.argv[2])
    controller = Controller(Handler(root), hostname="127.0.0.1", port=port)
    controller.start()
    open(os.path.join(root, "ready"), "w").close()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
