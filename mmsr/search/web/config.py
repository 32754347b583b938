"""Configuration of the web backends: one frozen dataclass.

The registry builds it from the search config's keys with ``mmsr.config.build`` (unknown keys
and wrong types are errors). API keys are never configuration values: the config names the
environment variables that hold them. ``PRESETS`` are named sets of keys a config can start
from (``"preset": "paper"``); the registry spells them out, and the config's own keys win.
"""

from __future__ import annotations

from dataclasses import dataclass

TEXT_ENGINES = ("serper", "serpapi", "none")
IMAGE_ENGINES = ("serpapi_lens", "none")
READERS = ("jina", "local")
UPLOADERS = ("none", "http_post")

PRESETS: dict[str, dict[str, object]] = {
    # The paper's text chain (§2.2): SerpAPI Google, Jina Reader, Qwen3-32B summaries served
    # by an OpenAI-compatible endpoint (vLLM on this machine unless llm_base_url says where).
    "paper": {
        "text_engine": "serpapi",
        "image_engine": "serpapi_lens",
        "reader": "jina",
        "llm_model": "Qwen/Qwen3-32B",
        "llm_base_url": "http://127.0.0.1:8000/v1",
        "llm_thinking": False,
        "pages": 5,
        "page_chars": 30_000,
        "summary_sentences": 5,
    },
    # The cheaper chain the defaults give, named so that a saved config says so.
    "cheap": {
        "text_engine": "serper",
        "image_engine": "serpapi_lens",
        "reader": "jina",
        "llm_model": "gpt-4o-mini",
        "llm_base_url": "https://api.openai.com/v1",
        "llm_thinking": True,
    },
}


@dataclass(frozen=True)
class WebConfig:
    """Everything the web chain needs; the defaults talk to the real services."""

    preset: str = ""
    """The preset in ``PRESETS`` these keys started from (recorded only; empty: none)."""
    text_engine: str = "serper"
    """Search API for text queries: serper, serpapi or none (no text tool)."""
    image_engine: str = "serpapi_lens"
    """Reverse image search API: serpapi_lens or none (no image tool)."""
    reader: str = "jina"
    """How pages are read: jina (Jina Reader) or local (guarded fetch + HTML-to-text)."""
    serpapi_url: str = "https://serpapi.com/search.json"
    """SerpAPI endpoint (Google and Google Lens engines)."""
    serper_url: str = "https://google.serper.dev/search"
    """Serper endpoint."""
    jina_url: str = "https://r.jina.ai/"
    """Jina Reader prefix; the page url is appended."""
    llm_base_url: str = "https://api.openai.com/v1"
    """OpenAI-compatible API root; ``/chat/completions`` is appended."""
    llm_model: str = "gpt-4o-mini"
    """Model that writes the page summaries."""
    llm_thinking: bool = True
    """False asks the server to turn a hybrid model's thinking off (Qwen3's enable_thinking)."""
    summary_prompt_file: str = ""
    """A text file that replaces the summary instruction; it may use {query}, {question},
    {title}, {text} and {sentences}, and must use {text}. Empty: the built-in one."""
    serpapi_key_env: str = "SERPAPI_API_KEY"
    """Environment variable with the SerpAPI key."""
    serper_key_env: str = "SERPER_API_KEY"
    """Environment variable with the Serper key."""
    jina_key_env: str = "JINA_API_KEY"
    """Environment variable with the Jina key (optional: Jina serves keyless at a low rate)."""
    llm_key_env: str = "OPENAI_API_KEY"
    """Environment variable with the LLM API key (optional for self-hosted servers)."""
    pages: int = 5
    """Summaries per text search (the paper's top-5), unless the caller asks for fewer."""
    candidate_urls: int = 10
    """Urls asked of the search API; the ones past ``pages`` replace pages that fail."""
    page_chars: int = 30_000
    """Characters of a page given to the summarizer (paper: the first 30,000)."""
    max_page_bytes: int = 5_000_000
    """Bytes read of one page at most; the rest is dropped."""
    summary_sentences: int = 5
    """Sentences a summary may have."""
    summary_max_tokens: int = 300
    """Completion tokens a summary may use."""
    timeout_s: float = 20.0
    """Timeout of one http call (connect, read, write, pool each)."""
    concurrency: int = 5
    """Pages read and summarised at once per text search."""
    rate_per_s: float = 10.0
    """Calls per second to each API at most (a token bucket per service)."""
    retry_attempts: int = 4
    """Attempts per call, the first one included."""
    retry_base_delay_s: float = 0.5
    """First back-off; doubles per retry, with jitter."""
    retry_max_delay_s: float = 8.0
    """Cap on one back-off."""
    max_retry_after_s: float = 30.0
    """A longer Retry-After fails the call instead of waiting."""
    trust_env: bool = True
    """Use proxy settings from the environment for the API calls (never for page fetches)."""
    allow_loopback: bool = False
    """Let the local page fetcher reach 127.0.0.1 (tests only)."""
    uploader: str = "none"
    """How an image without a public url gets one: none or http_post."""
    upload_url: str = ""
    """Endpoint of the http_post uploader (POST image bytes, answers the public url)."""
    upload_token_env: str = "MMSR_UPLOAD_TOKEN"
    """Environment variable with the upload endpoint's bearer token (optional)."""
    thumbnails: bool = True
    """Download the thumbnails of image hits (else hits carry none)."""
    serpapi_cost_usd: float = 0.015
    """Assumed price of one SerpAPI search, for the cost counter."""
    serper_cost_usd: float = 0.001
    """Assumed price of one Serper search."""
    llm_cost_per_mtok_usd: float = 0.0
    """Assumed price of a million LLM tokens (prompt and completion alike)."""

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("text_engine", self.text_engine, TEXT_ENGINES),
            ("image_engine", self.image_engine, IMAGE_ENGINES),
            ("reader", self.reader, READERS),
            ("uploader", self.uploader, UPLOADERS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, not {value!r}")
        if not 1 <= self.pages <= self.candidate_urls:
            raise ValueError("need 1 <= pages <= candidate_urls")
        if self.retry_attempts < 1 or self.concurrency < 1:
            raise ValueError("retry_attempts and concurrency must be >= 1")
        if self.preset and self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {tuple(PRESETS)}, not {self.preset!r}")
        if self.uploader == "http_post" and not self.upload_url:
            raise ValueError("uploader http_post needs upload_url")
