"""The naive classification server, issue 18's baseline (not a test): what a first implementation of
this service looks like. gRPC's thread-pool server as in grpc's own examples, the plain packaged
all-MiniLM-L6-v2 in torch fp32, each router's task descriptions embedded once at start, and per request
one tokenize, one forward, one cosine and argmax: no batching, no ONNX, no experts, no no-match
decision. It answers taskrouter.v1 Classify (task and per-task scores), so `bench_peer.py --peer naive`
drives it with the same client as taskrouter.

    python -m loadtests.naive_peer --port 50061
"""

from __future__ import annotations

import argparse
import logging
from concurrent import futures

import grpc
import torch

from models.config import PACKAGED_MINILM
from models.encoder import load_encoder
from server.config import DEFAULTS_DIR
from server.routing.spec import load_router_dir
from server.targets import load_catalog
from taskrouter.v1 import taskrouter_pb2 as pb
from taskrouter.v1 import taskrouter_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)


class NaiveClassifier(pb_grpc.TaskRouterServicer):
    def __init__(self) -> None:
        self.encoder, self.tokenizer = load_encoder(PACKAGED_MINILM)
        catalog = load_catalog(DEFAULTS_DIR / "catalog.yaml")
        self.routers: dict[str, tuple[list[str], torch.Tensor]] = {}
        for spec in load_router_dir(DEFAULTS_DIR / "routers", catalog):
            names = [t.name for t in spec.tasks]
            self.routers[spec.name] = (names, self.embed([t.description for t in spec.tasks]))

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        vectors = self.encoder(batch["input_ids"], batch["attention_mask"])
        return torch.nn.functional.normalize(vectors, dim=-1)

    def Classify(self, request: pb.ClassifyRequest, context: grpc.ServicerContext) -> pb.ClassifyResponse:
        if request.router not in self.routers:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown router {request.router!r}")
        names, prototypes = self.routers[request.router]
        similarities = (self.embed([request.prompt]) @ prototypes.T)[0]
        best = int(similarities.argmax())
        scores = [pb.TaskScore(task=n, similarity=float(s)) for n, s in zip(names, similarities, strict=True)]
        return pb.ClassifyResponse(task=names[best], matched=True, scores=scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=50061)
    args = parser.parse_args()
    logging.basicConfig(level="INFO")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=10))
    pb_grpc.add_TaskRouterServicer_to_server(NaiveClassifier(), server)
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    log.info("naive peer SERVING on 127.0.0.1:%d", port)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
