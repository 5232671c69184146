#!/usr/bin/python3
# A DoIP entity with one ECU built from scapy's packets (Debian python3-scapy, automotive
# contrib), for our client to talk to: routing activation, diagnostic message ACKs, and UDS
# answers made by scapy's UDS layer, including a 0x78 response pending before the routine
# result. Input: JSON on argv[1] (the proof to answer); prints "READY <port>", then one JSON
# line with what it received when the client is done.
import json
import socket
import struct
import sys

from scapy.contrib.automotive.doip import DoIP
from scapy.contrib.automotive.uds import UDS, UDS_DSCPR, UDS_ERPR, UDS_NR, UDS_RCPR, UDS_RDBIPR, UDS_SAPR, UDS_TPPR
from scapy.packet import Raw

a = json.loads(sys.argv[1])
ECU = a["ta"]
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(1)
print("READY", srv.getsockname()[1], flush=True)
srv.settimeout(20)
c, _ = srv.accept()
c.settimeout(10)
seen = []
buf = b""


def read_msg():
    global buf
    while True:
        if len(buf) >= 8:
            n = struct.unpack(">I", buf[4:8])[0]
            if len(buf) >= 8 + n:
                m, buf = buf[: 8 + n], buf[8 + n :]
                return DoIP(m)
        d = c.recv(4096)
        if not d:
            return None
        buf += d


def diag(sa, ta, uds):
    c.sendall(bytes(DoIP(payload_type=0x8001, source_address=sa, target_address=ta) / uds))


while True:
    m = read_msg()
    if m is None:
        break
    if m.payload_type == 0x0005:
        c.sendall(bytes(DoIP(payload_type=0x0006, logical_address_tester=m.source_address, logical_address_doip_entity=0x1000, routing_activation_response=0x10)))
        continue
    if m.payload_type != 0x8001:
        continue
    tester, req = m.source_address, bytes(m.payload)
    seen.append(req.hex())
    c.sendall(bytes(DoIP(payload_type=0x8002, source_address=ECU, target_address=tester, ack_code=0)))
    sid = req[0]
    if sid == 0x10:
        diag(ECU, tester, UDS() / UDS_DSCPR(diagnosticSessionType=req[1], sessionParameterRecord=b"\x00\x32\x01\xf4"))
    elif sid == 0x27 and req[1] % 2 == 1:
        diag(ECU, tester, UDS() / UDS_SAPR(securityAccessType=req[1], securitySeed=b"\x5a" * 16))
    elif sid == 0x27:
        diag(ECU, tester, UDS() / UDS_SAPR(securityAccessType=req[1]))
    elif sid == 0x22:
        diag(ECU, tester, UDS() / UDS_RDBIPR(dataIdentifier=0xF1A0) / Raw(bytes.fromhex(a["uid"])))
    elif sid == 0x31:
        diag(ECU, tester, UDS() / UDS_NR(requestServiceId=0x31, negativeResponseCode=0x78))
        diag(ECU, tester, UDS() / UDS_RCPR(routineControlType=1, routineIdentifier=0x0301) / Raw(bytes.fromhex(a["proof"])))
    elif sid == 0x2E:
        diag(ECU, tester, UDS() / UDS_NR(requestServiceId=0x2E, negativeResponseCode=0x22))
    elif sid == 0x3E:
        if req[1] & 0x80 == 0:
            diag(ECU, tester, UDS() / UDS_TPPR(zeroSubFunction=0))
    elif sid == 0x11:
        diag(ECU, tester, UDS() / UDS_ERPR(resetType=req[1]))
    else:
        diag(ECU, tester, UDS() / UDS_NR(requestServiceId=sid, negativeResponseCode=0x11))
print(json.dumps({"seen": seen}), flush=True)
