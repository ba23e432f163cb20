"""The service's settings: one pydantic-settings class, read from ``TUWEN_*`` environment variables.

Every field carries a ``description``: the deploy files (compose, Helm values, docs) mirror them and a
test checks they match, so a new knob is documented once, here. Bad values fail at start-up with the
variable's name, not on the first request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.store.indexes import MAX_TOP_K, MILVUS_MAX_TOP_K
from service.store.schema import TEXT_MAX_BYTES

MiB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUWEN_", extra="ignore", frozen=True)

    # The model and the engines.
    bundle: Path = Field(
        Path("artifacts/demo/bundle"),
        description="Model bundle directory (manifest.json, ONNX towers, vocab) exported by `tuwen export`.",
    )
    backend: Literal["auto", "onnxruntime", "tensorrt"] = Field(
        "auto",
        description="Inference backend: auto picks native TensorRT when the bundle has engines for this GPU, "
        "else ONNX Runtime with the best execution provider present.",
    )
    precision: Literal["auto", "fp32", "fp16", "int8"] = Field(
        "auto", description="Tower precision to load from the bundle; auto = fp16 on GPU, fp32 on CPU."
    )
    engine_cache_dir: Path | None = Field(
        None,
        description="Where TensorRT engines built at start are cached when the bundle directory is read-only "
        "(default: inside the bundle).",
    )
    intra_op_threads: int | None = Field(
        None, ge=1, description="ONNX Runtime intra-op threads per tower (default: the runtime's choice)."
    )
    cpu_threads: int = Field(
        4,
        ge=1,
        le=256,
        description="Threads for the CPU work around inference: tokenising, image decoding and thumbnails.",
    )
    ort_spin_wait: bool = Field(
        False,
        description="Let ONNX Runtime's idle intra-op threads spin between runs (lower latency for one "
        "tower alone, but they burn the cores the server and Milvus share).",
    )

    # Where data lives.
    data_dir: Path = Field(
        Path("data"), description="Data directory: the local Milvus data and thumbnails live here by default."
    )
    milvus_uri: str = Field(
        "",
        description="Milvus to use: http://host:19530 "
        "(Milvus Standalone/Distributed), a path ending in .db (Milvus Lite, one process) or another local "
        "path (a Milvus server the app runs itself on that directory). Empty = <DATA_DIR>/milvus.",
    )
    milvus_token: SecretStr | None = Field(
        None, description="Milvus token (user:password or API key) for a secured Milvus server."
    )
    milvus_index_type: (
        Literal["FLAT", "HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8", "AUTOINDEX", "GPU_CAGRA"] | None
    ) = Field(
        None,
        description="Vector index; unset = FLAT on Milvus Lite, HNSW on a Milvus server. GPU_CAGRA on Milvus GPU "
        "(top_k <= 1024).",
    )
    milvus_index_params: dict[str, Any] = Field(
        default_factory=dict,
        description='Index build parameters as JSON, e.g. {"M": 16, "efConstruction": 200} for HNSW.',
    )
    milvus_search_params: dict[str, Any] = Field(
        default_factory=dict,
        description='Search parameters as JSON, e.g. {"ef": 64} for HNSW or {"itopk_size": 128} for GPU_CAGRA.',
    )
    milvus_timeout_s: float = Field(
        5.0,
        gt=0,
        le=300,
        description="Deadline of one Milvus call, seconds: while Milvus is down or restarting, requests answer "
        "503 with Retry-After within this time instead of waiting.",
    )
    search_max_batch: int = Field(
        64,
        ge=1,
        le=1024,
        description="Most concurrent searches (same target, top_k, filter and tenant) sent to Milvus in one "
        "call; 1 = one search a call (same-key searches then run one after another).",
    )
    thumbnail_dir: Path | None = Field(
        None, description="Directory of ingested images' thumbnails (default: <DATA_DIR>/thumbnails)."
    )
    thumbnail_size: int = Field(256, ge=16, le=2048, description="Longest side of stored thumbnails, pixels.")
    thumbnail_s3_uri: str = Field(
        "",
        description="Keep thumbnails in an S3-compatible bucket, s3://bucket/prefix (credentials: the standard "
        "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY); empty = THUMBNAIL_DIR on local disk.",
    )
    s3_endpoint_url: str = Field(
        "", description="S3 endpoint for THUMBNAIL_S3_URI, e.g. http://minio:9000; empty = AWS S3."
    )

    # Dynamic batching.
    max_batch_text: int = Field(64, ge=1, le=4096, description="Most texts one text-tower batch holds.")
    max_batch_image: int = Field(16, ge=1, le=4096, description="Most images one image-tower batch holds.")
    batch_wait_ms: float = Field(
        5.0, ge=0, le=1000, description="Longest a request waits for others to share its batch, milliseconds."
    )
    max_queue: int = Field(
        512, ge=1, description="Most inputs waiting per tower; beyond it requests get 429 with Retry-After."
    )
    max_queue_per_tenant: int | None = Field(
        None,
        ge=1,
        description="Most inputs one tenant may have waiting per tower (429 beyond), so one tenant cannot fill "
        "the queue; unset = half of MAX_QUEUE, at least MAX_TEXTS and MAX_IMAGES.",
    )

    # Security and limits.
    api_keys: SecretStr | None = Field(
        None,
        description="API keys as key:tenant,key:tenant. When set (or API_KEYS_FILE), every API call needs "
        "`Authorization: Bearer <key>` and sees only its tenant's items; unset = open, tenant `default`.",
    )
    api_keys_file: Path | None = Field(
        None,
        description="File of API keys, one key:tenant per line (# comments allowed); merged with API_KEYS.",
    )
    max_upload_bytes: int = Field(
        10 * MiB,
        ge=1024,
        description="Largest request body accepted, bytes (413 beyond, checked while streaming).",
    )
    max_image_pixels: int = Field(
        40_000_000,
        ge=1,
        description="Largest decoded image, width*height pixels (guards decompression bombs).",
    )
    max_images: int = Field(16, ge=1, description="Most images in one /embed request.")
    max_texts: int = Field(
        64, ge=1, description="Most texts in one /embed, /v1/embeddings or /items request."
    )
    max_text_chars: int = Field(512, ge=1, description="Longest text accepted, characters.")
    max_top_k: int = Field(100, ge=1, le=16384, description="Largest top_k a search may ask for.")
    max_metadata_bytes: int = Field(4096, ge=2, description="Largest item metadata accepted, bytes of JSON.")
    rate_limit: float = Field(
        0.0,
        ge=0,
        description="Requests per second each tenant may make to /embed, /search, /v1/embeddings and POST "
        "/items, per replica (429 rate_limited beyond, with Retry-After); 0 = unlimited.",
    )
    rate_burst: int | None = Field(
        None,
        ge=1,
        description="Most requests a tenant may make at once after an idle spell (its token bucket's size); "
        "unset = two seconds' worth of its rate.",
    )
    rate_limits: str = Field(
        "",
        description="Per-tenant rates overriding RATE_LIMIT, as tenant:rps,tenant:rps (0 = unlimited); each "
        "tenant must be one an API key maps to.",
    )

    # The HTTP server.
    host: str = Field("127.0.0.1", description="Address `tuwen serve` listens on (0.0.0.0 in containers).")
    port: int = Field(8000, ge=1, le=65535, description="Port `tuwen serve` listens on.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    cors: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins allowed to call the API from a browser, comma-separated (* = any); empty = none.",
    )

    @field_validator("cors", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        # Parse now so a malformed key list stops the start, naming the variable.
        self.api_key_tenants()
        # A request is queued whole or refused: one larger than the queue could never be served.
        if self.max_queue < max(self.max_texts, self.max_images):
            raise ValueError(
                f"TUWEN_MAX_QUEUE ({self.max_queue}) must be at least TUWEN_MAX_TEXTS ({self.max_texts}) "
                f"and TUWEN_MAX_IMAGES ({self.max_images})"
            )
        per_tenant = self.max_queue_per_tenant
        if (
            per_tenant is not None
            and not max(self.max_texts, self.max_images) <= per_tenant <= self.max_queue
        ):
            raise ValueError(
                f"TUWEN_MAX_QUEUE_PER_TENANT ({per_tenant}) must be at most TUWEN_MAX_QUEUE ({self.max_queue}) "
                f"and at least TUWEN_MAX_TEXTS ({self.max_texts}) and TUWEN_MAX_IMAGES ({self.max_images})"
            )
        self.tenant_rate_limits()
        uri = self.thumbnail_s3_uri
        if uri and not (uri.startswith("s3://") and uri[5:].split("/")[0]):
            raise ValueError(f"TUWEN_THUMBNAIL_S3_URI must be s3://bucket[/prefix], got {uri!r}")
        # Limits that the store would refuse later, one request at a time: refuse them at start instead.
        index_cap = MAX_TOP_K.get(self.milvus_index_type or "", MILVUS_MAX_TOP_K)
        if self.max_top_k > index_cap:
            raise ValueError(
                f"TUWEN_MAX_TOP_K ({self.max_top_k}) is more than the index {self.milvus_index_type or 'default'} "
                f"can return ({index_cap}); lower TUWEN_MAX_TOP_K"
            )
        if self.max_text_chars * 4 > TEXT_MAX_BYTES:  # 4 bytes: the longest UTF-8 character
            raise ValueError(
                f"TUWEN_MAX_TEXT_CHARS ({self.max_text_chars}) could exceed the store's text field "
                f"({TEXT_MAX_BYTES} bytes of UTF-8); use at most {TEXT_MAX_BYTES // 4}"
            )
        return self

    @property
    def resolved_milvus_uri(self) -> str:
        return self.milvus_uri or str(self.data_dir / "milvus")

    @property
    def resolved_thumbnail_dir(self) -> Path:
        return self.thumbnail_dir or self.data_dir / "thumbnails"

    @property
    def queue_per_tenant(self) -> int:
        """MAX_QUEUE_PER_TENANT, or its default: half the queue, but room for the largest request."""
        if self.max_queue_per_tenant is not None:
            return self.max_queue_per_tenant
        return max(self.max_queue // 2, self.max_texts, self.max_images)

    def tenant_rate_limits(self) -> dict[str, float]:
        """TUWEN_RATE_LIMITS as tenant → requests per second."""
        limits: dict[str, float] = {}
        for chunk in self.rate_limits.split(","):
            if not chunk.strip():
                continue
            tenant, sep, rate = (part.strip() for part in chunk.rpartition(":"))
            try:
                rps = float(rate)
            except ValueError:
                rps = -1.0
            if not sep or not tenant or not (0 <= rps < float("inf")):
                raise ValueError(
                    f"TUWEN_RATE_LIMITS: each entry must be tenant:rps with rps >= 0, got {chunk!r}"
                )
            if tenant in limits:
                raise ValueError(f"TUWEN_RATE_LIMITS: tenant {tenant!r} is listed twice")
            limits[tenant] = rps
        # A misspelt tenant would silently keep the default rate: refuse names no request can have
        # (without API keys every request is tenant `default`).
        known = set(self.api_key_tenants().values()) or {"default"}
        unknown = sorted(set(limits) - known)
        if unknown:
            raise ValueError(
                f"TUWEN_RATE_LIMITS names tenants no API key maps to: {unknown}; "
                "check the spelling against TUWEN_API_KEYS / TUWEN_API_KEYS_FILE"
            )
        return limits

    def api_key_tenants(self) -> dict[str, str]:
        """Configured API keys → tenant. Empty means the API is open (everyone is tenant ``default``)."""
        entries: list[tuple[str, str]] = []
        if self.api_keys is not None:
            for chunk in self.api_keys.get_secret_value().split(","):
                if chunk.strip():
                    entries.append(("TUWEN_API_KEYS", chunk.strip()))
        if self.api_keys_file is not None:
            try:
                lines = self.api_keys_file.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ValueError(f"TUWEN_API_KEYS_FILE: cannot read {self.api_keys_file}: {exc}") from exc
            for line in lines:
                line = line.split("#", 1)[0].strip()
                if line:
                    entries.append((f"TUWEN_API_KEYS_FILE ({self.api_keys_file})", line))
        keys: dict[str, str] = {}
        for source, entry in entries:
            key, sep, tenant = entry.rpartition(":")
            if not sep or not key.strip() or not tenant.strip():
                raise ValueError(
                    f"{source}: each entry must be key:tenant, got an entry without a key or tenant"
                )
            keys[key.strip()] = tenant.strip()
        return keys
