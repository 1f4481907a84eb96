"""ONNX Runtime sessions for the three graphs, behind the same interface as the torch model.

ONNX Runtime falls back to the CPU silently when CUDA libraries are missing, so the providers that
really run are read back from each session and reported.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from recsys.contracts.errors import ArtifactError, DeviceError
from recsys.contracts.files import read_json_object
from recsys.contracts.layout import ITEM_ENCODER, SCORER, SERVING_CONFIG_FILE, TOKENIZER_FILE, USER_ENCODER, graph_file
from serving.text import ItemTokenizer

CPU = "CPUExecutionProvider"
FIXED_BATCH = 4  # rows of every fp32 CPU encoder run (one token length each): rerun 53x vs 19x at 16, cold 14% slower than batches of 64
CUDA = "CUDAExecutionProvider"
# onnxruntime's CPU SkipLayerNormalization kernel is ~6x slower than the Add + LayerNormalization it
# replaces (export.onnx_export.optimize_item_graph): on CPU the session must not fuse them back
CPU_DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]


def choose_providers(device: str) -> list[str]:
    """Providers to ask for: `cpu`, `cuda` (error if unavailable) or `auto` (CUDA when present)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        if CUDA not in available:
            raise DeviceError(f"--device cuda: this onnxruntime has no CUDA provider (available: {', '.join(available)})")
        return [CUDA, CPU]
    if device == "auto":
        return [CUDA, CPU] if CUDA in available and _cuda_visible() else [CPU]
    raise ArtifactError(f"--device must be auto, cpu or cuda, found '{device}'")


def _cuda_visible() -> bool:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return False
    return any(Path(p).exists() for p in ("/dev/nvidia0", "/dev/nvidiactl", "/proc/driver/nvidia"))


def session_options(threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or (os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # shared 2-core machines
    options.log_severity_level = 3
    return options


class OnnxInterestModel:
    """The `InterestModel` interface (`encode_items`, `user_vectors`, `score`) over ONNX Runtime sessions
    of an export folder. `max_length` defaults to the export's serving config."""

    def __init__(
        self,
        folder: str | Path,
        *,
        providers: list[str] | None = None,
        precision: str = "fp32",
        threads: int = 0,
        max_length: int | None = None,
        batch_size: int = 64,
        io_binding: bool | None = None,
    ):
        folder = Path(folder)
        providers = providers or [CPU]
        options = session_options(threads)
        # int8 on CPU encodes one item per run (below); such small runs scale better across items, one
        # core each, than across the cores of one run
        self.workers = (threads or os.cpu_count() or 1) if precision == "int8" and providers[0] == CPU else 1
        item_options = session_options(1) if self.workers > 1 else options
        self._folder, self._asked, self._item_options = folder, providers, item_options
        self._disabled = CPU_DISABLED_OPTIMIZERS if providers[0] == CPU else []
        self._item_closed = False
        # the item encoder (the Transformer, by far the largest session) opens on first use: a nightly
        # run whose catalog is all in the item-vector cache never loads it
        self.sessions = {name: self._open(name, options) for name in (USER_ENCODER, SCORER)}
        self.providers = self.sessions[USER_ENCODER].get_providers()
        self.provider = self.providers[0]
        # IO binding (on CUDA by default): outputs are written to memory bound on the provider's device
        # and copied back once, instead of ORT allocating and synchronising per output
        self.io_binding = self.provider == CUDA if io_binding is None else io_binding
        self._device = "cuda" if self.provider == CUDA else "cpu"
        self.precision = precision
        # Dynamic int8 quantisation scales activations per batch, so an item's vector would depend on the
        # items sharing its batch; one item per run (no padding either) makes it a function of its text
        # alone — what the item-vector cache and identical reruns need. Measured as fast as batching here.
        self.batch_size = 1 if precision == "int8" else batch_size
        # fp32 on CPU: runs of one shape per token length (serving.text.ItemTokenizer.fixed_batches), so a
        # cached vector equals the one a cold run computes — the same guarantee int8 gets from single runs
        self.fixed_shapes = precision != "int8" and providers[0] == CPU
        user_input = self.sessions[USER_ENCODER].get_inputs()[0].shape
        self.history_length, self.dim = int(user_input[1]), int(user_input[2])
        if max_length is None:
            max_length = read_json_object(folder / SERVING_CONFIG_FILE, "re-export the model")["max_length"]
        self.tokenizer = ItemTokenizer(folder / TOKENIZER_FILE, max_length)

    def _open(self, name: str, options):
        import onnxruntime as ort

        try:
            return ort.InferenceSession(
                str(self._folder / graph_file(name)), options, providers=self._asked, disabled_optimizers=self._disabled
            )
        except Exception as exc:
            raise ArtifactError(f"{self._folder}: ONNX graph {graph_file(name)} cannot be loaded ({str(exc).splitlines()[0]})") from None

    def item_session(self):
        if ITEM_ENCODER not in self.sessions:
            if self._item_closed:
                raise ArtifactError("the item encoder was closed after the catalog was encoded; open the export again to encode")
            self.sessions[ITEM_ENCODER] = self._open(ITEM_ENCODER, self._item_options)
        return self.sessions[ITEM_ENCODER]

    def encode_tokens(self, tokens: list[np.ndarray], progress=None) -> np.ndarray:
        out = np.zeros((len(tokens), self.dim), dtype=np.float32)
        session = self.item_session()
        if self.fixed_shapes and self.batch_size > 1:
            batches = list(self.tokenizer.fixed_batches(tokens, FIXED_BATCH))
        else:
            batches = list(self.tokenizer.batches(tokens, self.batch_size))

        def run(batch) -> int:
            (vectors,) = self._run(session, {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask})
            out[batch.order] = vectors[: len(batch.order)]  # fixed-shape runs carry filler rows at the end
            return len(batch.order)

        done = 0
        if self.workers > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(self.workers) as pool:  # ORT releases the GIL inside run()
                for count in pool.map(run, batches):
                    done += count
                    if progress and done % 256 < count:
                        progress("encode items", done, len(tokens))
        else:
            for batch in batches:
                done += run(batch)
                if progress:
                    progress("encode items", done, len(tokens))
        if progress:
            progress("encode items", len(tokens), len(tokens))
        return out

    def encode_items(self, texts: list[str], progress=None) -> np.ndarray:
        """L2-normalised item vectors (N, D), batches sorted by token length."""
        return self.encode_tokens(self.tokenizer.encode(texts), progress)

    def user_vectors(self, history: np.ndarray, history_mask: np.ndarray) -> np.ndarray:
        (users,) = self._run(
            self.sessions[USER_ENCODER],
            {"history": history.astype(np.float32, copy=False), "history_mask": history_mask.astype(np.float32, copy=False)},
        )
        return users

    def score(self, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p_click, p_purchase, similarity = self._run(
            self.sessions[SCORER],
            {"user_vector": users.astype(np.float32, copy=False), "item_vectors": items.astype(np.float32, copy=False)},
        )
        return p_click, p_purchase, similarity

    def close_item_encoder(self) -> None:
        """Release the item encoder's session (the largest by far) once the catalog is encoded."""
        self.sessions.pop(ITEM_ENCODER, None)
        self._item_closed = True

    def _run(self, session, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        rows = len(next(iter(feeds.values())))
        if rows == 1 and session is not self.sessions.get(ITEM_ENCODER):
            # a one-row matrix product runs another kernel (GEMV) whose sums round differently: a lone
            # user is run as two rows, so their numbers never depend on how many users share the batch
            return [out[:1] for out in self._run(session, {k: np.concatenate([v, v]) for k, v in feeds.items()})]
        if not self.io_binding:
            return session.run(None, feeds)
        binding = session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for output in session.get_outputs():
            binding.bind_output(output.name, self._device)
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()
