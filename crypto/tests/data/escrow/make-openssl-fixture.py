#!/usr/bin/env python3
"""Cross-check tosskey's escrow OAEP against OpenSSL (test-only keys; needs `openssl`).

  make-openssl-fixture.py seal IN.json OUT.json KEY_HEX
      Re-seal IN.json's single key with `openssl pkeyutl` (RSA-OAEP, SHA-256 for OAEP and
      MGF1, label = the documented canonical label JSON) to test-a-2048.spki.pem.
  make-openssl-fixture.py open IN.json
      Decrypt IN.json's keys with `openssl pkeyutl` and test-a-2048.pkcs8.pem; print hex.

The label is re-derived here independently of the Rust code: compact JSON, fields in
struct order, of {purpose, format, version, metadata, recipient, key_index, dm_name}.
"""
import base64, json, os, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
PURPOSE = "tosskey escrow: OAEP label binding the metadata to the key"


def label(doc, index):
    obj = {
        "purpose": PURPOSE,
        "format": doc["format"],
        "version": doc["version"],
        "metadata": doc["metadata"],
        "recipient": doc["recipient"],
        "key_index": index,
        "dm_name": doc["keys"][index]["dm_name"],
    }
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def pkeyutl(args, data, lab):
    opts = ["-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256",
            "-pkeyopt", "rsa_mgf1_md:sha256", "-pkeyopt", "rsa_oaep_label:" + lab.hex()]
    return subprocess.run(["openssl", "pkeyutl"] + args + opts, input=data,
                          capture_output=True, check=True).stdout


def main():
    cmd = sys.argv[1]
    doc = json.load(open(sys.argv[2]), object_pairs_hook=dict)
    if cmd == "seal":
        key = bytes.fromhex(sys.argv[4])
        ct = pkeyutl(["-encrypt", "-pubin", "-inkey", os.path.join(HERE, "test-a-2048.spki.pem")],
                     key, label(doc, 0))
        doc["keys"][0]["ciphertext"] = base64.b64encode(ct).decode()
        with open(sys.argv[3], "w") as out:
            json.dump(doc, out, indent=2)
            out.write("\n")
    elif cmd == "open":
        for i, k in enumerate(doc["keys"]):
            pt = pkeyutl(["-decrypt", "-inkey", os.path.join(HERE, "test-a-2048.pkcs8.pem")],
                         base64.b64decode(k["ciphertext"]), label(doc, i))
            print(k["dm_name"], pt.hex())


main()
