#!/usr/bin/python3
# scapy's DoIP/UDS client (Debian python3-scapy, automotive contrib) against our ECU simulator:
# vehicle identification over UDP, then over TCP routing activation (DoIPSocket), session,
# security access (seed -> AES-CMAC key), the SHE UID, M1-M3 by RoutineControl, reset.
# Input: one JSON object on argv[1]; output: one JSON object on stdout.
import json
import socket
import struct
import sys
import time

from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC
from scapy.contrib.automotive.doip import DoIP, UDS_DoIPSocket
from scapy.contrib.automotive.uds import UDS, UDS_DSC, UDS_ER, UDS_RC, UDS_RDBI, UDS_SA, UDS_TP
from scapy.packet import Raw


class FramedSocket(UDS_DoIPSocket):
    """scapy 2.5's StreamSocket hands its DoIP layer everything one TCP read returned, and that
    layer has no length-based split: a diagnostic ACK and the answer right behind it in one
    read become one packet (the answer swallowed as the ACK's previous_msg). So we read one
    message by its header's length and let scapy's DoIP/UDS layers parse it."""

    def recv(self, x=0):
        hdr = self.ins.recv(8, socket.MSG_WAITALL)
        if len(hdr) < 8:
            return None
        n = struct.unpack(">I", hdr[4:8])[0]
        body = self.ins.recv(n, socket.MSG_WAITALL) if n else b""
        pkt = DoIP(hdr + body)
        pkt.time = time.time()
        return pkt.payload if pkt.payload_type == 0x8001 else pkt


a = json.loads(sys.argv[1])
out = {}

# UDP vehicle identification request, answer parsed by scapy
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(3)
u.sendto(bytes(DoIP(payload_type=0x0001)), (a["host"], a["udp"]))
ans = DoIP(u.recv(1024))
out["vin"] = ans.vin.decode()
out["logical_address"] = ans.logical_address
u.close()

s = FramedSocket(a["host"], a["tcp"], source_address=0x0E90, target_address=a["ta"])


def sr(p):
    r = s.sr1(UDS() / p, timeout=3, verbose=False)
    # response pending: keep reading until the final answer
    while r is not None and r.service == 0x7F and r.negativeResponseCode == 0x78:
        r = s.recv()
    return r


r = sr(UDS_DSC(diagnosticSessionType=0x02))
out["session"] = r.service
r = sr(UDS_SA(securityAccessType=0x11))
seed = bytes(r.securitySeed)
c = CMAC(algorithms.AES(bytes.fromhex(a["secret"])))
c.update(seed)
r = sr(UDS_SA(securityAccessType=0x12, securityKey=c.finalize()))
out["security"] = r.service
r = sr(UDS_RDBI(identifiers=[0xF1A0]))
out["uid"] = bytes(r.payload)[2:].hex() if r.service == 0x62 else None
r = sr(UDS_RC(routineControlType=1, routineIdentifier=0x0301) / Raw(bytes.fromhex(a["m123"])))
out["routine"] = r.service
out["proof"] = bytes(r.payload)[3:].hex() if r.service == 0x71 else None
r = sr(UDS_TP(subFunction=0))
out["tester_present"] = r.service
r = sr(UDS_ER(resetType=1))
out["reset"] = r.service
s.close()
print(json.dumps(out))
