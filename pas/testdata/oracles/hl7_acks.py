"""Oracle for the gateway's HL7 v2 acknowledgements: PyPI hl7apy (not our parser) must parse
every ACK, with its structure validated against the message's HL7 version.

Usage: python hl7_acks.py FILE...   Each FILE holds one ACK (segments ended by CR) and, on its
first line, "# <expected MSA-1> <expected MSA-2>". Prints one line per file; exits 1 if any
ACK does not parse, does not validate, or has another MSA-1/MSA-2.
"""
import sys

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import get_message_info, parse_message


def check(path):
    with open(path, "rb") as f:
        head, body = f.read().split(b"\n", 1)
    _, want_code, want_ctrl = (head.decode() + " ").split(" ", 2)
    text = body.decode("utf-8")
    level, how = VALIDATION_LEVEL.STRICT, "strict"
    if get_message_info(text)[2] == "2.3":
        # hl7apy's strict mode finds an ACK's structure only in MSH-9.3, which v2.3 (before
        # 2.3.1) does not have: parse tolerantly and check the segments here.
        level, how = VALIDATION_LEVEL.TOLERANT, "tolerant (v2.3 has no MSH-9.3)"
    msg = parse_message(text, validation_level=level, find_groups=False)
    if level == VALIDATION_LEVEL.STRICT:
        msg.validate()
    names = [c.name for c in msg.children]
    if names[:2] != ["MSH", "MSA"] or any(n not in ("MSH", "MSA", "ERR") for n in names):
        raise ValueError(f"segments {names}")
    msa = msg.msa
    code, ctrl = msa.msa_1.value, msa.msa_2.value
    if code != want_code or ctrl != want_ctrl.strip():
        raise ValueError(f"MSA-1/2 {code!r}/{ctrl!r}, want {want_code!r}/{want_ctrl.strip()!r}")
    if msg.msh.msh_9.msh_9_1.value != "ACK":
        raise ValueError(f"MSH-9 {msg.msh.msh_9.value!r}")
    return f"{code} v{msg.version} {len(msg.children)} segments, {how}"


def main(paths):
    bad = 0
    for p in paths:
        try:
            print(f"ok {p}: {check(p)}")
        except Exception as e:  # noqa: BLE001 - report every failure, then exit non-zero
            bad += 1
            print(f"FAIL {p}: {type(e).__name__}: {e}")
    print(f"{len(paths) - bad} passed, {bad} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
