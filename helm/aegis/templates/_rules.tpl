{{/*
The alert rule groups: one source for the PrometheusRule (prometheusrule.yaml) and for
the plain Prometheus rules file helm/prometheus/aegis.rules.yaml, which is this template
rendered with the default values (`python -m tests.helm.sync` writes it; a test keeps it
current, and `promtool test rules` fires every alert in it).

Budget series come from the operator (labels budget, namespace, provider: read from the
ledger) and from each sidecar (its own view); max by (namespace, budget, provider) takes
the most pessimistic, so the alerts work with either scraped. The three budget alerts
overlap (at 100 % all three fire); an Alertmanager inhibit rule on the labels budget and
namespace silences the lower ones (docs/operations.md).
*/}}
{{- define "aegis.ruleGroups" -}}
{{- $r := .Values.monitoring.prometheusRule -}}
groups:
  - name: aegis.budget
    rules:
      - alert: AegisBudgetWarning
        expr: |-
          max by (namespace, budget, provider) (aegis_budget_utilisation_ratio) >= {{ $r.budgetWarningRatio }}
        for: {{ $r.for }}
        labels:
          severity: info
        annotations:
          summary: >-
            {{`Budget {{ $labels.namespace }}/{{ $labels.budget }} is at {{ $value | humanizePercentage }}`}}
          description: >-
            {{`LLMBudget {{ $labels.namespace }}/{{ $labels.budget }} ({{ $labels.provider }}) has used {{ $value | humanizePercentage }} of this month's limit.`}}
      - alert: AegisBudgetCritical
        expr: |-
          max by (namespace, budget, provider) (aegis_budget_utilisation_ratio) >= {{ $r.budgetCriticalRatio }}
        for: {{ $r.for }}
        labels:
          severity: warning
        annotations:
          summary: >-
            {{`Budget {{ $labels.namespace }}/{{ $labels.budget }} is at {{ $value | humanizePercentage }}`}}
          description: >-
            {{`LLMBudget {{ $labels.namespace }}/{{ $labels.budget }} ({{ $labels.provider }}) has used {{ $value | humanizePercentage }} of this month's limit; requests will fall back or be refused when it is exhausted.`}}
      - alert: AegisBudgetExhausted
        expr: |-
          max by (namespace, budget, provider) (aegis_budget_utilisation_ratio) >= {{ $r.budgetExhaustedRatio }}
        for: {{ $r.for }}
        labels:
          severity: critical
        annotations:
          summary: >-
            {{`Budget {{ $labels.namespace }}/{{ $labels.budget }} is exhausted`}}
          description: >-
            {{`LLMBudget {{ $labels.namespace }}/{{ $labels.budget }} ({{ $labels.provider }}) is at {{ $value | humanizePercentage }}: {{ $labels.provider }} gets no more requests this month (onExceeded decides between local fallback and refusal).`}}
  - name: aegis.requests
    rules:
      - alert: AegisErrorRateHigh
        expr: |-
          sum by (namespace) (rate(aegis_requests_total{outcome="error"}[5m]))
          / sum by (namespace) (rate(aegis_requests_total[5m])) > {{ $r.errorRateRatio }}
        for: {{ $r.for }}
        labels:
          severity: warning
        annotations:
          summary: >-
            {{`LLM error rate in {{ $labels.namespace }} is {{ $value | humanizePercentage }}`}}
          description: >-
            {{`{{ $value | humanizePercentage }} of the requests through Aegis sidecars in {{ $labels.namespace }} ended in an upstream error after every fallback (line: `}}{{ mulf $r.errorRateRatio 100 }}{{` %).`}}
      - alert: AegisLatencyP95High
        expr: |-
          histogram_quantile(0.95, sum by (namespace, provider, le) (rate(aegis_request_duration_seconds_bucket{provider=~"{{ $r.latencyProviderRegex }}", outcome="ok"}[5m]))) > {{ $r.latencyP95Seconds }}
        for: {{ $r.for }}
        labels:
          severity: warning
        annotations:
          summary: >-
            {{`p95 latency of {{ $labels.provider }} in {{ $labels.namespace }} is {{ $value | humanizeDuration }}`}}
          description: >-
            {{`The 95th percentile of successful {{ $labels.provider }} requests in {{ $labels.namespace }} took {{ $value | humanizeDuration }} over the last 5 minutes.`}}
      - alert: AegisCostPerDayHigh
        expr: |-
          sum by (namespace) (increase(aegis_cost_usd_total[1d])) > {{ $r.costPerDayUSD }}
        for: {{ $r.for }}
        labels:
          severity: warning
        annotations:
          summary: >-
            {{`LLM spend in {{ $labels.namespace }} was {{ $value | printf "%.2f" }} USD over the last 24 hours`}}
          description: >-
            {{`Settled cost of the requests from {{ $labels.namespace }} over the last 24 hours is {{ $value | printf "%.2f" }} USD, above the line of `}}{{ $r.costPerDayUSD }}{{` USD per day.`}}
  - name: aegis.sidecar
    rules:
      - alert: AegisConfigRejected
        expr: |-
          min by (namespace, pod) (aegis_config_last_reload_valid) == 0
        for: {{ $r.for }}
        labels:
          severity: warning
        annotations:
          summary: >-
            {{`Sidecar {{ $labels.namespace }}/{{ $labels.pod }} refused its new config`}}
          description: >-
            {{`The Aegis sidecar in {{ $labels.namespace }}/{{ $labels.pod }} keeps serving its last good config: the newest one on disk is invalid (see the sidecar's log and the LLMRoute's status).`}}
      - alert: AegisLedgerWriteErrors
        expr: |-
          sum by (namespace, pod) (increase(aegis_ledger_write_errors_total[10m])) > 0
        for: {{ $r.for }}
        labels:
          severity: warning
        annotations:
          summary: >-
            {{`Sidecar {{ $labels.namespace }}/{{ $labels.pod }} cannot write to the ledger`}}
          description: >-
            {{`Ledger writes from {{ $labels.namespace }}/{{ $labels.pod }} are failing and being retried (rows are spooled locally); check the ledger database and its DSN Secret.`}}
  - name: aegis.controlplane
    rules:
      - alert: AegisRouteNotReady
        expr: |-
          max by (namespace, route) (aegis_route_ready) == 0
        for: {{ $r.for }}
        labels:
          severity: warning
        annotations:
          summary: >-
            {{`LLMRoute {{ $labels.namespace }}/{{ $labels.route }} is not ready`}}
          description: >-
            {{`The operator could not put the config of LLMRoute {{ $labels.namespace }}/{{ $labels.route }} into effect; its Ready condition says why (kubectl describe llmroute -n {{ $labels.namespace }} {{ $labels.route }}).`}}
      - alert: AegisOperatorLedgerDown
        expr: |-
          min(aegis_operator_ledger_up) == 0
        for: {{ $r.for }}
        labels:
          severity: critical
        annotations:
          summary: >-
            {{`The Aegis operator cannot read the ledger`}}
          description: >-
            {{`Budget status, budget gauges and rollout analysis are stale while the operator cannot read the Postgres ledger; check the ledger database and the DSN Secret.`}}
      - alert: AegisInjectorRefusingPods
        expr: |-
          sum by (reason) (rate(aegis_injector_admissions_total{outcome="refused"}[5m])) > 0
        for: {{ $r.for }}
        labels:
          severity: warning
        annotations:
          summary: >-
            {{`The Aegis injector keeps refusing pods ({{ $labels.reason }})`}}
          description: >-
            {{`Pods that asked for the Aegis sidecar are refused with reason {{ $labels.reason }}, so they are not created; the refusal message is in the events of their ReplicaSet or Job.`}}
      - alert: AegisInjectorCertificateExpiring
        expr: |-
          min(aegis_injector_certificate_expiry_timestamp_seconds) - time() < 7 * 86400
        labels:
          severity: critical
        annotations:
          summary: >-
            {{`The injector's serving certificate expires in {{ $value | humanizeDuration }}`}}
          description: >-
            {{`Certificates are renewed well before expiry; one this close to it means rotation failed (injector log, its TLS Secret or cert-manager's Certificate). When it expires the API server refuses every opted-in pod.`}}
{{- end -}}
