"""Print the service's OpenAPI document (what `GET /openapi.json` answers), for gen:api."""

import json
import logging
import sys

from app.config import Settings
from app.main import create_app

logging.disable(logging.WARNING)  # "web UI not built" is noise here
json.dump(create_app(Settings(_env_file=None)).openapi(), sys.stdout, indent=4)
sys.stdout.write("\n")
