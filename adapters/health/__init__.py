"""Health registries (ПМСП attachment, ОСМС status, screening, psychological help): HL7 FHIR R4 codec and simulator."""
