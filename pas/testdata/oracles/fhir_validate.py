"""Oracle for FHIR JSON: PyPI fhir.resources (pydantic models generated from the FHIR
StructureDefinitions, not ours) must validate every resource: the examples we accept, the
OperationOutcomes and Bundles we answer with, and the CapabilityStatement.

Usage: python fhir_validate.py FILE...   Each FILE holds one FHIR resource as JSON. Uses the
R4B models (fhir.resources has no separate R4 set; the resources used here are R4's). Exits 1
if any does not validate.
"""
import json
import sys

from fhir.resources.R4B import get_fhir_model_class


def check(path):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    rt = data.get("resourceType")
    model = get_fhir_model_class(rt).model_validate(data)
    if model.get_resource_type() != rt:
        raise ValueError(f"validated as {model.get_resource_type()}, is {rt}")
    return rt


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
