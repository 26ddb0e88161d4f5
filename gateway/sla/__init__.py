"""Domain SLA engine: policy (mappings/sla.yaml), Kazakhstan working-day calendar, legs, summary and KPIs."""
