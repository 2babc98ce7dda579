"""SN27 (NI Compute) synapse definitions, declared exactly as the subnet's protocol module does,
plus helpers shared by the peer scripts in this directory.

Works with bittensor 9.0.0 and 10.5.0 (both expose ``bt.Synapse``).
"""

import json
import sys

import bittensor as bt

# TEST-NET-1 address reported as "our external IP"; it must differ from any target axon IP,
# because the dendrite rewrites a target whose ip equals its external ip to 0.0.0.0.
DEFAULT_EXTERNAL_IP = "192.0.2.10"


class Allocate(bt.Synapse):
    timeline: int = 0
    device_requirement: dict = {}
    checking: bool = True
    output: dict = {}
    public_key: str = ""
    docker_requirement: dict = {
        "base_image": "ubuntu",
        "ssh_key": "",
        "ssh_port": 4444,
        "volume_path": "/tmp",
        "dockerfile": "",
    }
    docker_change: bool = False
    docker_action: dict = {
        "action": "",
        "ssh_key": "",
        "key_type": "",
    }

    def deserialize(self) -> dict:
        return self.output


class Specs(bt.Synapse):
    specs_input: str = ""
    specs_output: str = ""

    def deserialize(self) -> str:
        return self.specs_output


def go_offline(external_ip: str = DEFAULT_EXTERNAL_IP) -> None:
    """Silence SDK logging (it writes to stdout) and stop Axon()/Dendrite() from looking up
    the external IP over the internet. Call before constructing an Axon or a Dendrite."""
    import warnings

    import bittensor.utils.networking as networking

    bt.logging.off()
    # bittensor 9.0.0's axon keeps TerminalInfo.version/port as str: pydantic warns on every dump
    warnings.filterwarnings("ignore", message="Pydantic serializer warnings", category=UserWarning)
    networking.get_external_ip = lambda: external_ip


def fail(message: str, code: int = 1) -> "NoReturn":  # noqa: F821
    """Print an error to stderr and exit non-zero."""
    sys.stderr.write(f"{sys.argv[0]}: error: {message}\n")
    sys.stderr.flush()
    sys.exit(code)


def read_json_object(stream) -> dict:
    """Read exactly one JSON object from a text stream, line by line, without waiting for EOF
    (the axon keeps stdin open afterwards). Raises ValueError on EOF or invalid input."""
    decoder = json.JSONDecoder()
    buf = ""
    while True:
        line = stream.readline()
        if line == "":
            if buf.strip():
                raise ValueError("stdin closed before a complete JSON object was read")
            raise ValueError("stdin closed before any JSON object was read")
        buf += line
        text = buf.strip()
        if not text:
            continue
        try:
            obj, end = decoder.raw_decode(text)
        except json.JSONDecodeError as e:
            # Ran out of input (object continues on a later line): keep reading.
            if e.pos >= len(text) or e.msg.startswith("Unterminated string"):
                if len(buf) > 16 * 1024 * 1024:
                    raise ValueError("JSON input too large") from e
                continue
            raise ValueError(f"invalid JSON on stdin: {e}") from e
        if text[end:].strip():
            raise ValueError("unexpected data after the JSON object on stdin")
        if not isinstance(obj, dict):
            raise ValueError("stdin JSON must be an object")
        return obj
