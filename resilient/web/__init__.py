"""The web dashboard: `resilient web` (or `resilient supervisor --web-port`), stdlib HTTP, assets in the package."""
