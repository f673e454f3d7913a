"""The serving loop of lowbit's long-lived PyTorch peers (torch_rnn.py, torch_seq.py): one JSON
object per line in each direction (bench/peers/json-line-peer.ts is the other end).

threads_argument(doc) reads the peer's --threads flag (default 2);
start(threads, extra) imports torch, sets its threads and prints the "ready" line (or prints
{"skipped": reason} and returns None when torch cannot be imported); serve(handlers) then answers
each request line {"op": name, ...} with handlers[name](req) (a dict, sent with "ok": true) until
end of input; an exception answers {"error": "<type>: <message>"} and serving goes on.
"""
import argparse
import json
import sys


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def threads_argument(doc):
    """The --threads of the peer's command line (default 2); `doc` is its --help text."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args().threads


def start(threads, extra=None):
    """torch with `threads` intra-op threads and 1 inter-op thread, after the "ready" line; None if missing."""
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - any import failure means "no peer"
        emit({"skipped": f"torch import failed: {type(exc).__name__}: {exc}"})
        return None
    from torch_bench import loaded_blas

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    emit({"ready": True, "torch": torch.__version__, "blas": loaded_blas(), "threads": torch.get_num_threads(),
          **(extra(torch) if extra else {})})
    return torch


def serve(handlers):
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            op = req.get("op")
            if op not in handlers:
                raise ValueError(f"unknown op {op!r}")
            emit({"ok": True, **handlers[op](req)})
        except Exception as exc:  # noqa: BLE001 - report, keep serving
            emit({"error": f"{type(exc).__name__}: {exc}"})
    return 0
