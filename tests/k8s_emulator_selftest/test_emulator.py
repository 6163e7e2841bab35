"""The emulator, driven through kubernetes_asyncio exactly as the Kubernetes runner drives it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
import httpx
import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.k8s_emulator.fixture import EmulatorProcess
from tests_helpers import GATED_SCRIPT  # noqa: F401  (replaced below)
