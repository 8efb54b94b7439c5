"""Builds the provider chain a Fetch service uses from its settings."""

from __future__ import annotations

from services.fetch.providers.base import Provider
from services.fetch.providers.simulated import SimulatedProvider

LIVE_CHAIN = ("coingecko", "binance", "kraken", "coinbase")

# Assets the simulated provider pretends to list, so an unknown symbol is NOT_FOUND even offline.
SIMULATED_BASES = ("BTC", "ETH", "SOL", "XRP", "BNB", "ADA", "DOGE", "TRX", "BCH", "LTC", "DOT", "AVAX",
                   "LINK", "MATIC", "ATOM", "XLM", "UNI", "ETC")
SIMULATED_QUOTES = ("USD", "USDT", "USDC", "EUR")


class KnownAssets(Provider):
    """Restricts a provider to a fixed universe of BASE-QUOTE pairs."""

    def __init__(self, inner: Provider, bases=SIMULATED_BASES, quotes=SIMULATED_QUOTES):
        self.inner = inner
        self.name = inner.name
        self.origin = inner.origin
        self.bases, self.quotes = set(bases), set(quotes)

    def supports(self, symbol: str, interval: str) -> bool:
        base, _, quote = symbol.partition("-")
        return base in self.bases and quote in self.quotes and self.inner.supports(symbol, interval)

    async def fetch_bars(self, symbol, interval, start_ms, end_ms):
        return await self.inner.fetch_bars(symbol, interval, start_ms, end_ms)

    async def close(self) -> None:
        await self.inner.close()


def _http_provider(name: str, settings) -> Provider:
    from services.fetch.providers import binance, coinbase, coingecko, kraken
    from services.fetch.resilience import ResilientProvider

    if name == "coingecko":
        inner = coingecko.CoinGeckoProvider(base_url=settings.coingecko_url, api_key=settings.coingecko_api_key or None)
    elif name == "binance":
        inner = binance.BinanceProvider(base_url=settings.binance_url)
    elif name == "kraken":
        inner = kraken.KrakenProvider(base_url=settings.kraken_url)
    else:
        inner = coinbase.CoinbaseProvider(base_url=settings.coinbase_url)
    return ResilientProvider(inner)


def build_providers(settings) -> list[Provider]:
    """The providers of a setting such as 'live', 'simulated', 'csv', 'csv,binance' or 'binance,kraken'.

    Simulated never mixes with anything: it is a mode of its own, not a fallback for live data.
    """
    names = settings.provider.split(",")
    if names == ["simulated"]:
        return [KnownAssets(SimulatedProvider(seed=settings.seed))]
    providers: list[Provider] = []
    for name in dict.fromkeys(n for part in names for n in (LIVE_CHAIN if part == "live" else (part,))):
        if name == "csv":
            from services.fetch.providers.csv_file import CsvProvider

            providers.append(CsvProvider.from_specs(settings.csv_file))
        else:
            providers.append(_http_provider(name, settings))
    return providers
