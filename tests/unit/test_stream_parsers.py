"""The exchange stream parsers on the recorded sessions in shared/data/ws/."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from services.fetch.streams.binance import BinanceStream
from services.fetch.streams.coinbase import CoinbaseStream
from services.fetch.streams.kraken import KrakenStream
from services.fetch.streams.messages import BadFrame, Kline, Trade

BINANCE_SYMBOLS = ["FTM-USD", "SXP-BTC", "BADGER-BTC", "XMR-BTC"]
COINBASE_PRODUCTS = ["SKL-USD", "SKL-BTC", "BAND-GBP", "NMR-EUR", "BAND-BTC", "YFI-BTC", "DASH-BTC", "NU-GBP",
                     "CRV-EUR", "SKL-GBP"]
KRAKEN_SYMBOLS = ["WAVES-EUR", "XMR-USD", "KSM-BTC", "GRT-ETH", "SC-EUR", "ETH-CHF", "OCEAN-BTC", "OMG-USD",
                   "BTC-CHF", "ADA-BTC"]


@pytest.fixture
def ws_data(shared_data):
    return shared_data / "ws"


def lines(folder, name):
    return (folder / name).read_text().splitlines()


def test_binance_session_kinds_and_values(ws_data):
    parser = BinanceStream(BINANCE_SYMBOLS)
    parsed = [parser.parse(line) for line in lines(ws_data, "binance_combined_stream_session.jsonl")]
    assert Counter(p.kind for p in parsed) == {"ignored": 958, "trade": 28, "kline": 17}  # depth, bookTicker ignored
    first = next(p for p in parsed if p.kind == "trade")
    assert first.events == [Trade("FTM-USD", 1628952396572, 0.33993, 99.9)] and first.event_ms == 1628952396573
    closes = [p.events[0] for p in parsed if p.kind == "kline" and p.events[0].closed]
    assert len(closes) == 2 and all(k.open_ms % 60_000 == 0 for k in closes)


def test_binance_raw_payloads_and_old_trade_fields(ws_data):
    parser = BinanceStream(["BNB-BTC", *BINANCE_SYMBOLS])
    raw = [parser.parse(line) for line in lines(ws_data, "binance_kline_1m.jsonl")]
    assert [p.kind for p in raw] == ["kline"] * 17
    old = [parser.parse(line) for line in lines(ws_data, "binance_trade.jsonl")]  # 2019 frames with b/a fields
    assert [p.events[0] for p in old] == [Trade("BNB-BTC", 1554076800940, 0.0042699, 33.82),
                                          Trade("BNB-BTC", 1567296001034, 0.0021965, 6.48)]


@pytest.mark.parametrize("text", ["{not json", "[1,2]", '{"data":{"e":"aggTrade","s":"FTMUSDT","p":"1"}}',
                                  '{"data":{"e":"aggTrade","s":"FTMUSDT","p":"-1","q":"1","T":1,"E":1}}',
                                  '{"data":{"e":"kline","E":1,"k":{"s":"FTMUSDT","i":"1m"}}}'])
def test_binance_malformed_frames_raise_bad_frame(text):
    with pytest.raises(BadFrame):
        BinanceStream(BINANCE_SYMBOLS).parse(text)


def test_binance_server_shutdown_is_announced():
    parser = BinanceStream(BINANCE_SYMBOLS)
    assert parser.parse('{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}').kind == "shutdown"


def test_coinbase_session_trades_state_and_no_false_gaps(ws_data):
    parser = CoinbaseStream(COINBASE_PRODUCTS)
    parsed = [parser.parse(line) for line in lines(ws_data, "coinbase_session_ticker_matches.jsonl")]
    kinds = Counter(p.kind for p in parsed)
    # 97 matches are trades; the 10 last_match (state on subscribe) and 3 subscriptions are control; tickers unused.
    assert kinds == {"trade": 97, "control": 13, "ignored": 107}
    assert not any(p.gap for p in parsed)  # sequences jump between trades by design: no gap in a complete capture
    first = next(p for p in parsed if p.kind == "trade").events[0]
    assert first == Trade("SKL-BTC", 1618677817089, 0.00001305, 985.0)


def test_coinbase_dropped_match_is_a_gap_and_a_duplicate_is_dropped(ws_data):
    matches = [json.loads(x) for x in lines(ws_data, "coinbase_matches.jsonl")]
    skl = [m for m in matches if m["product_id"] == "SKL-USD"]
    parser = CoinbaseStream(["SKL-USD"])
    results = [parser.parse(json.dumps(m)) for m in [skl[0], skl[1], skl[3], skl[3]]]
    assert [r.kind for r in results] == ["control", "trade", "trade", "control"]
    assert results[1].gap == "" and "missing" in results[2].gap and str(skl[2]["trade_id"]) in results[2].gap
    assert results[2].gap_symbol == "SKL-USD"


def test_coinbase_heartbeat_beyond_the_last_match_is_a_gap(ws_data):
    matches = [json.loads(x) for x in lines(ws_data, "coinbase_matches.jsonl")]
    last = [m for m in matches if m["product_id"] == "SKL-USD"][-1]
    parser = CoinbaseStream(["SKL-USD"])
    parser.parse(json.dumps(last))

    def beat(trade_id):
        return json.dumps({"type": "heartbeat", "sequence": last["sequence"] + 9, "last_trade_id": trade_id,
                           "product_id": "SKL-USD", "time": "2021-04-17T16:43:40.000000Z"})
    assert parser.parse(beat(last["trade_id"])).gap == ""
    lost = parser.parse(beat(last["trade_id"] + 2))  # the feed's last two trades never reached us
    assert lost.kind == "heartbeat" and lost.gap_symbol == "SKL-USD" and "missing" in lost.gap
    assert parser.parse(beat(last["trade_id"] + 2)).gap == ""  # reported once


def test_coinbase_subscribe_and_error_frames(ws_data):
    parser = CoinbaseStream(["BTC-USD"])
    sent = json.loads(parser.subscribe_messages()[0])
    assert sent == {"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["matches", "heartbeat"]}
    assert [parser.parse(x).kind for x in lines(ws_data, "coinbase_error.jsonl")] == ["error", "error"]


def test_kraken_v1_sessions(ws_data):
    parser = KrakenStream(KRAKEN_SYMBOLS, "wss://ws.kraken.com")
    parsed = [parser.parse(x) for x in lines(ws_data, "kraken_v1_trade_session.jsonl")]
    assert Counter(p.kind for p in parsed) == {"heartbeat": 30, "control": 11, "trade": 8}
    trades = [t for p in parsed for t in p.events]
    assert trades[0] == Trade("XMR-USD", 1618678142557, 354.11, 0.89594024)
    sent = json.loads(lines(ws_data, "kraken_v1_trade_subscribe_request_sent.jsonl")[0])
    assert json.loads(parser.subscribe_messages()[0]) == sent  # what the recorded client sent
    ticker = [parser.parse(x).kind for x in lines(ws_data, "kraken_v1_ticker_session.jsonl")]
    assert Counter(ticker) == {"heartbeat": 31, "control": 11, "ignored": 18}  # ticker arrays: not our channel


def test_kraken_v2_trade_heartbeat_and_snapshot():
    parser = KrakenStream(["BTC-USD"], "ws://127.0.0.1:1/v2")
    assert json.loads(parser.subscribe_messages()[0]) == {"method": "subscribe",
                                                         "params": {"channel": "trade", "symbol": ["BTC/USD"]}}
    # The documented v2 trade shape (docs.kraken.com spot-websocket-v2/trade); no capture of it exists.
    update = {"channel": "trade", "type": "update", "data": [
        {"symbol": "BTC/USD", "side": "sell", "price": 26_500.1, "qty": 0.25, "ord_type": "market",
         "trade_id": 1, "timestamp": "2023-09-25T07:49:37.708706Z"}]}
    parsed = parser.parse(json.dumps(update))
    assert parsed.kind == "trade" and parsed.events == [Trade("BTC-USD", 1695628177708, 26_500.1, 0.25)]
    assert parser.parse(json.dumps({**update, "type": "snapshot"})).kind == "control"  # before we listened
    assert parser.parse('{"channel":"heartbeat"}').kind == "heartbeat"
    assert parser.parse('{"method":"subscribe","success":false,"error":"bad symbol"}').kind == "error"


def test_kraken_v2_docs_example_ohlc_is_not_our_channel(ws_data):
    parser = KrakenStream(["ALGO-USD"], "wss://ws.kraken.com/v2")
    assert parser.parse(lines(ws_data, "kraken_v2_ohlc.DOCS_EXAMPLE.jsonl")[0]).kind == "ignored"


def test_kline_fields(ws_data):
    k = BinanceStream(BINANCE_SYMBOLS).parse(lines(ws_data, "binance_kline_1m.jsonl")[0]).events[0]
    assert isinstance(k, Kline) and k.symbol == "FTM-USD" and k.open_ms == 1628952360000 and not k.closed
