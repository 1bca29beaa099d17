"""hamfin: FX and futures forecasting around the Hamiltonian Memory Layer with Dissipation."""
