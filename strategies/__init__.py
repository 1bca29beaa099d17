"""WHAT to trade: pure signal rules over forecasts, and the one backtest door (vectorbt)."""
