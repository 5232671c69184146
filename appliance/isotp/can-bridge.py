#!/usr/bin/python3
# SocketCAN CAN_RAW for pks-inject (appliance/isotp/can-link.ts): Node.js has no AF_CAN and a
# native addon would put a compiler into the image, while Python's socket module speaks AF_CAN.
# This bridge only moves frames: stdin/stdout carry records of one length byte (16 or 72) and
# a struct can_frame / canfd_frame; ISO-TP itself is TypeScript. argv: IFACE RX_ID [fd]
import os
import socket
import struct
import sys
import threading

iface, rx, fd = sys.argv[1], int(sys.argv[2], 0), len(sys.argv) > 3 and sys.argv[3] == "fd"
s = socket.socket(socket.AF_CAN, socket.SOCK_RAW, socket.CAN_RAW)
if fd:
    s.setsockopt(socket.SOL_CAN_RAW, socket.CAN_RAW_FD_FRAMES, 1)
mask = 0x1FFFFFFF | socket.CAN_EFF_FLAG if rx > 0x7FF else 0x7FF | socket.CAN_EFF_FLAG
can_id = rx | socket.CAN_EFF_FLAG if rx > 0x7FF else rx
s.setsockopt(socket.SOL_CAN_RAW, socket.CAN_RAW_FILTER, struct.pack("=II", can_id, mask))
s.bind((iface,))
out = os.fdopen(sys.stdout.fileno(), "wb", buffering=0)
out.write(b"\x00")  # ready


def reader():
    while True:
        f = s.recv(72)
        out.write(bytes([len(f)]) + f)


threading.Thread(target=reader, daemon=True).start()
inp = os.fdopen(sys.stdin.fileno(), "rb", buffering=0)
while True:
    n = inp.read(1)
    if not n:
        break
    f = inp.read(n[0])
    while len(f) < n[0]:
        more = inp.read(n[0] - len(f))
        if not more:
            sys.exit(0)
        f += more
    s.send(f)
