{{/* ---------------------------------------------------------------- names */}}

{{- define "coder-jobs.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix. With release name `coder-jobs` (the documented one) it is `coder-jobs`, so the
RUNBOOK's object names are exact.
*/}}
{{- define "coder-jobs.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Name of a component object: "<fullname>-<suffix>". Fails instead of truncating (a truncated name
would no longer match the RUNBOOK). Usage: include "coder-jobs.componentName" (list $ "reap")
*/}}
{{- define "coder-jobs.componentName" -}}
{{- $name := printf "%s-%s" (include "coder-jobs.fullname" (index . 0)) (index . 1) }}
{{- if gt (len $name) 63 }}
{{- fail (printf "object name %q is longer than 63 characters; set fullnameOverride to something shorter" $name) }}
{{- end }}
{{- $name }}
{{- end }}

{{/*
CronJob names are limited to 52 characters (the controller appends an 11-character suffix to Job
names). With the documented release name `coder-jobs` every name also leaves room for the
RUNBOOK's "<name>-manual-<epoch>" Job names (63 characters); a test checks that.
*/}}
{{- define "coder-jobs.cronJobName" -}}
{{- $name := include "coder-jobs.componentName" . }}
{{- if gt (len $name) 52 }}
{{- fail (printf "CronJob name %q is longer than 52 characters; set fullnameOverride to something shorter" $name) }}
{{- end }}
{{- $name }}
{{- end }}

{{- define "coder-jobs.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* ---------------------------------------------------------------- labels */}}

{{- define "coder-jobs.selectorLabels" -}}
app.kubernetes.io/name: {{ include "coder-jobs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "coder-jobs.labels" -}}
helm.sh/chart: {{ include "coder-jobs.chart" . }}
{{ include "coder-jobs.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: coder
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of one component. Usage: include "coder-jobs.componentLabels" (list $ "reap") */}}
{{- define "coder-jobs.componentLabels" -}}
{{ include "coder-jobs.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* ---------------------------------------------------------------- values helpers */}}

{{- define "coder-jobs.image" -}}
{{- $img := .Values.image }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- if ne .Values.environment "local" }}
{{- /* No digest is shipped in the values files: a made-up one would pass this check and fail every
pull. The release workflow builds, signs and publishes the image and opens the pull request that
writes its digest here. */}}
{{- fail (printf "image.digest is required when environment is %q (only local may use a tag). The digest comes from a release: .github/workflows/release.yaml builds and signs ghcr.io/ameideio/coder-jobs and opens a pull request writing image.digest into chart/values-%s.yaml; merge that, or set image.digest to the sha256 of an image you built from images/Dockerfile" .Values.environment .Values.environment) }}
{{- end }}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{- define "coder-jobs.coderUrl" -}}
{{- default (printf "http://coder.%s.svc.cluster.local" .Release.Namespace) .Values.coder.url }}
{{- end }}

{{/*
Where workspaces run: workspaces.namespace when this chart manages that namespace's guardrails,
else the release namespace (as Coder's own chart does), which exists: a Role for the reaper in a
namespace nobody created would fail the sync.
*/}}
{{- define "coder-jobs.workspaceNamespace" -}}
{{- if .Values.workspaces.enabled }}
{{- default .Release.Namespace .Values.workspaces.namespace }}
{{- else }}
{{- .Release.Namespace }}
{{- end }}
{{- end }}

{{/* Namespace the reaper checks, empty when the reaper does not talk to Kubernetes. */}}
{{- define "coder-jobs.reapNamespace" -}}
{{- if .Values.reap.kubernetesChecks }}
{{- default (include "coder-jobs.workspaceNamespace" .) .Values.reap.workspaceNamespace }}
{{- end }}
{{- end }}

{{/* "true" when the job calls the Kubernetes API. */}}
{{- define "coder-jobs.usesKubernetes" -}}
{{- $root := index . 0 }}{{ $job := index . 1 }}
{{- if eq $job "sync-external-auth" }}true
{{- else if and (eq $job "reap") (include "coder-jobs.reapNamespace" $root) }}true
{{- end }}
{{- end }}

{{/* Which jobs are rendered at all, in order. */}}
{{- define "coder-jobs.enabledJobs" -}}
{{- $jobs := list }}
{{- if .Values.syncExternalAuth.enabled }}{{ $jobs = append $jobs "sync-external-auth" }}{{ end }}
{{- if .Values.bootstrapAdmin.enabled }}{{ $jobs = append $jobs "bootstrap-admin" }}{{ end }}
{{- if .Values.templates.enabled }}{{ $jobs = append $jobs "republish-templates" }}{{ end }}
{{- if .Values.recover.enabled }}{{ $jobs = append $jobs "recover" }}{{ end }}
{{- if .Values.doctor.enabled }}{{ $jobs = append $jobs "doctor" }}{{ end }}
{{- if .Values.reap.enabled }}{{ $jobs = append $jobs "reap" }}{{ end }}
{{- toJson $jobs }}
{{- end }}

{{/* ---------------------------------------------------------------- templates */}}

{{/*
Index of the templates to publish, as JSON:
  {"templates": {"<name>": [{"rel": "<path inside the template>", "key": "<configmap key>",
                             "path": "<chart file>" | "content": "<text from values>"}]},
   "shared": [{"rel": "<path from coder-templates>", "key": "...", "path": "..."}],
   "external": {"<name>": {"configMap": "<user's ConfigMap>", "files": [{"rel": ..., "key": ...}]}},
   "names": ["<published template>", ...]}
Three sources, all mounted under /templates/<name>/ so the job sees one folder per template:
- the Ameide templates of chart/files/coder-templates (templates.ameide.enabled): a template is a
  top-level folder with a .tf file directly inside it; everything else there (top-level files,
  shared module folders) goes to the "shared" ConfigMap so the mounted tree is the chart's;
- templates.files: {<name>: {<path>: <content>}} from values, rendered to ConfigMaps like the above;
- templates.configMaps: ConfigMaps the user creates, each file listed (a projected volume needs
  the keys up front).
ConfigMap keys cannot contain "/": it becomes "__".
*/}}
{{- define "coder-jobs.templateIndex" -}}
{{- $prefix := "files/coder-templates/" }}
{{- $t := .Values.templates }}
{{- $detected := dict }}
{{- $all := list }}
{{- if $t.ameide.enabled }}
{{- range $path, $_ := .Files.Glob "files/coder-templates/**" }}
{{- $rel := trimPrefix $prefix $path }}
{{- $all = append $all $rel }}
{{- $parts := splitList "/" $rel }}
{{- if and (eq (len $parts) 2) (hasSuffix ".tf" $rel) }}
{{- $_ := set $detected (first $parts) true }}
{{- end }}
{{- end }}
{{- end }}
{{- $own := dict }}
{{- range $name, $files := $t.files }}
{{- if hasKey $detected $name }}{{ fail (printf "templates.files.%s: an Ameide template has that name (turn templates.ameide.enabled off, or rename yours)" $name) }}{{ end }}
{{- $entries := list }}
{{- range $rel := keys $files | sortAlpha }}
{{- if regexMatch "(^|/)\\.\\.?(/|$)" $rel }}{{ fail (printf "templates.files.%s: %q: a path may not contain . or .. segments" $name $rel) }}{{ end }}
{{- $entries = append $entries (dict "rel" $rel "key" (replace "/" "__" $rel) "content" (toString (get $files $rel))) }}
{{- end }}
{{- $_ := set $own $name $entries }}
{{- end }}
{{- $external := dict }}
{{- range $i, $cm := $t.configMaps }}
{{- if or (hasKey $detected $cm.name) (hasKey $own $cm.name) (hasKey $external $cm.name) }}
{{- fail (printf "templates.configMaps[%d]: template %q is already given (Ameide templates, templates.files or an earlier entry)" $i $cm.name) }}
{{- end }}
{{- $entries := list }}
{{- range $rel := $cm.files }}
{{- if regexMatch "(^|/)\\.\\.?(/|$)" $rel }}{{ fail (printf "templates.configMaps[%d].files: %q: a path may not contain . or .. segments" $i $rel) }}{{ end }}
{{- $entries = append $entries (dict "rel" $rel "key" (replace "/" "__" $rel)) }}
{{- end }}
{{- $_ := set $external $cm.name (dict "configMap" $cm.configMap "files" $entries) }}
{{- end }}
{{- $names := $t.names }}
{{- if not $names }}{{ $names = concat (keys $detected) (keys $own) (keys $external) | sortAlpha }}{{ end }}
{{- $templates := dict }}
{{- range $names }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" .) }}
{{- fail (printf "templates.names: %q is not a valid template/ConfigMap name" .) }}
{{- end }}
{{- if not (hasKey $external .) }}{{ $_ := set $templates . (get $own . | default list) }}{{ end }}
{{- end }}
{{- $shared := list }}
{{- $seen := dict }}
{{- range $all }}
{{- if not (regexMatch "^[-._a-zA-Z0-9/]+$" .) }}
{{- fail (printf "coder template file %q: only letters, digits, '-', '_' and '.' are allowed in file names (ConfigMap keys)" .) }}
{{- end }}
{{- $top := first (splitList "/" .) }}
{{- if hasKey $templates $top }}
{{- $inner := trimPrefix (printf "%s/" $top) . }}
{{- $key := replace "/" "__" $inner }}
{{- $seenKey := printf "%s:%s" $top $key }}
{{- if hasKey $seen $seenKey }}{{ fail (printf "coder template files collide on ConfigMap key %q" $seenKey) }}{{ end }}
{{- $_ := set $seen $seenKey true }}
{{- $_ := set $templates $top (append (get $templates $top) (dict "rel" $inner "key" $key "path" (printf "%s%s" $prefix .))) }}
{{- else if not (hasKey $detected $top) }}
{{- $key := replace "/" "__" . }}
{{- if hasKey $seen $key }}{{ fail (printf "coder template files collide on ConfigMap key %q" $key) }}{{ end }}
{{- $_ := set $seen $key true }}
{{- $shared = append $shared (dict "rel" . "key" $key "path" (printf "%s%s" $prefix .)) }}
{{- end }}
{{- end }}
{{- range $name, $entries := $own }}
{{- $keys := dict }}
{{- range $entries }}
{{- if hasKey $keys .key }}{{ fail (printf "templates.files.%s: files collide on ConfigMap key %q" $name .key) }}{{ end }}
{{- $_ := set $keys .key true }}
{{- end }}
{{- end }}
{{- range $names }}
{{- if and (not (get $templates .)) (not (hasKey $external .)) }}
{{- fail (printf "templates.names: %q is none of the templates given (chart/files/coder-templates/%s with templates.ameide.enabled, templates.files, templates.configMaps)" . .) }}
{{- end }}
{{- end }}
{{- if not $names }}
{{- fail "templates.enabled is true but there is no template to publish: keep templates.ameide.enabled, or give your own in templates.files or templates.configMaps" }}
{{- end }}
{{- toJson (dict "templates" $templates "shared" $shared "external" $external "names" $names) }}
{{- end }}

{{/* sha256 over every template file path and content (a user's ConfigMap: its name and files). */}}
{{- define "coder-jobs.templatesChecksum" -}}
{{- $sum := "" }}
{{- if .Values.templates.ameide.enabled }}
{{- range $path, $content := .Files.Glob "files/coder-templates/**" }}
{{- $sum = printf "%s%s\n%s\n" $sum $path (sha256sum (toString $content)) }}
{{- end }}
{{- end }}
{{- with .Values.templates.files }}{{ $sum = printf "%s%s" $sum (toJson .) }}{{ end }}
{{- with .Values.templates.configMaps }}{{ $sum = printf "%s%s" $sum (toJson .) }}{{ end }}
{{- sha256sum $sum }}
{{- end }}

{{- define "coder-jobs.templatesRevision" -}}
{{- $rev := default (include "coder-jobs.templatesChecksum" . | trunc 12) .Values.templates.revision }}
{{- printf "%s-%s" (.Chart.Version | replace "+" "-") $rev }}
{{- end }}

{{- define "coder-jobs.binaryFile" -}}
{{- if regexMatch "(?i)\\.(png|jpe?g|gif|ico|webp|zip|gz|tgz|tar|woff2?)$" . }}true{{ end }}
{{- end }}

{{/* ---------------------------------------------------------------- hooks */}}

{{/*
Hook annotations for both installers. Argo CD ignores the Helm hook types when its own annotation
is present but takes the union of the delete policies (both are before-hook-creation here), and
helm.sh/hook-weight only counts when no sync-wave is set - so both carry the same number.
Usage: include "coder-jobs.hookAnnotations" (dict "phase" "PreSync" "weight" -10)
*/}}
{{- define "coder-jobs.hookAnnotations" -}}
argocd.argoproj.io/hook: {{ .phase }}
argocd.argoproj.io/sync-wave: {{ .weight | quote }}
argocd.argoproj.io/hook-delete-policy: BeforeHookCreation
helm.sh/hook: {{ ternary "pre-install,pre-upgrade" "post-install,post-upgrade" (eq .phase "PreSync") }}
helm.sh/hook-weight: {{ .weight | quote }}
helm.sh/hook-delete-policy: before-hook-creation
{{- end }}

{{/* ---------------------------------------------------------------- pods */}}

{{- define "coder-jobs.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "coder-jobs.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Seconds a Job may run: the job's own deadlines plus a margin. */}}
{{- define "coder-jobs.activeDeadline" -}}
{{- $root := index . 0 }}{{ $job := index . 1 }}
{{- $v := $root.Values }}
{{- $margin := int $v.jobs.deadlineMarginSeconds }}
{{- $ready := int $v.coder.readyTimeoutSeconds }}
{{- $builds := mul (int $v.templates.buildTimeoutSeconds) (max 1 (len (fromJson (include "coder-jobs.templateIndex" $root)).names)) }}
{{- if eq $job "sync-external-auth" }}{{ add (int $v.syncExternalAuth.sourceTimeoutSeconds) $margin }}
{{- else if eq $job "bootstrap-admin" }}{{ add $ready $margin }}
{{- else if eq $job "reap" }}{{ max (int $v.reap.activeDeadlineSeconds) (add $ready $margin) }}
{{- else }}{{ add $ready $builds $margin }}
{{- end }}
{{- end }}

{{/* Container args: global flags first, then the subcommand and its flags. */}}
{{- define "coder-jobs.args" -}}
{{- $root := index . 0 }}{{ $job := index . 1 }}{{ $dryRun := index . 2 }}
{{- $args := list "--log-format" $root.Values.logFormat }}
{{- if $dryRun }}{{ $args = append $args "--dry-run" }}{{ end }}
{{- $args = append $args $job }}
{{- if and (eq $job "sync-external-auth") $root.Values.syncExternalAuth.adopt }}{{ $args = append $args "--adopt" }}{{ end }}
{{- if and (eq $job "reap") $root.Values.reap.deleteOrphans (include "coder-jobs.reapNamespace" $root) }}{{ $args = append $args "--delete-orphans" }}{{ end }}
{{- toJson $args }}
{{- end }}

{{/*
The variables a job reads, in order: chart/files/job-env.json, written from the jobs' settings
classes (jobs/cli.py's job table) by `python -m tests.job_env`; tests/test_job_env.py fails when
it drifts. Which job gets which variable is decided there, never here.
Usage: include "coder-jobs.jobEnvNames" (list $ "<job>") | fromJsonArray
*/}}
{{- define "coder-jobs.jobEnvNames" -}}
{{- $root := index . 0 }}{{ $job := index . 1 }}
{{- $table := fromJson ($root.Files.Get "files/job-env.json") }}
{{- if not (hasKey $table.jobs $job) }}{{ fail (printf "chart/files/job-env.json names no job %q" $job) }}{{ end }}
{{- toJson (index $table.jobs $job) }}
{{- end }}

{{/*
One variable as a container env entry, from its value; nothing when the chart leaves the job's
default (or the value is unset). Usage: include "coder-jobs.envVar" (list $ "<VARIABLE>")
*/}}
{{- define "coder-jobs.envVar" -}}
{{- $root := index . 0 }}{{ $name := index . 1 }}
{{- $v := $root.Values }}
{{- $value := "" }}
{{- if eq $name "POD_NAMESPACE" }}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      apiVersion: v1
      fieldPath: metadata.namespace
{{- else if has $name (list "CODER_ADMIN_PASSWORD" "CODER_SESSION_TOKEN" "CODER_SETUP_TOKEN") }}
{{- $keys := dict "CODER_ADMIN_PASSWORD" $v.coder.admin.passwordKey "CODER_SESSION_TOKEN" $v.coder.admin.sessionTokenKey "CODER_SETUP_TOKEN" $v.coder.admin.setupTokenKey }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $v.coder.admin.secretName }}
      key: {{ index $keys $name }}
      {{- if ne $name "CODER_ADMIN_PASSWORD" }}
      optional: true
      {{- end }}
{{- else if eq $name "CODER_URL" }}{{ $value = include "coder-jobs.coderUrl" $root }}
{{- else if eq $name "CODER_ORGANIZATION" }}{{ $value = $v.coder.organization }}
{{- else if eq $name "CODER_READY_TIMEOUT" }}{{ $value = $v.coder.readyTimeoutSeconds }}
{{- else if eq $name "CODER_ADMIN_USERNAME" }}{{ $value = $v.coder.admin.username }}
{{- else if eq $name "CODER_ADMIN_EMAIL" }}{{ $value = $v.coder.admin.email }}
{{- else if eq $name "CODER_ADMIN_NAME" }}{{ $value = $v.coder.admin.name }}
{{- else if eq $name "EXTERNAL_AUTH_CLIENT_ID_SECRET" }}{{ $value = $v.syncExternalAuth.clientIdSecret }}
{{- else if eq $name "EXTERNAL_AUTH_CLIENT_SECRET_SECRET" }}{{ $value = $v.syncExternalAuth.clientSecretSecret }}
{{- else if eq $name "EXTERNAL_AUTH_TARGET_SECRET" }}{{ $value = $v.syncExternalAuth.targetSecret }}
{{- else if eq $name "EXTERNAL_AUTH_ID" }}{{ $value = $v.syncExternalAuth.id }}
{{- else if eq $name "EXTERNAL_AUTH_SOURCE_TIMEOUT" }}{{ $value = $v.syncExternalAuth.sourceTimeoutSeconds }}
{{- else if eq $name "CODER_DEPLOYMENT" }}{{ if $v.syncExternalAuth.restartDeployment }}{{ $value = $v.coder.deploymentName }}{{ end }}
{{- else if eq $name "TEMPLATES_DIR" }}{{ $value = "/templates" }}
{{- else if eq $name "TEMPLATES" }}{{ $value = join "," (fromJson (include "coder-jobs.templateIndex" $root)).names }}
{{- else if eq $name "TEMPLATES_REVISION" }}{{ $value = include "coder-jobs.templatesRevision" $root }}
{{- else if eq $name "TEMPLATE_BUILD_TIMEOUT" }}{{ $value = $v.templates.buildTimeoutSeconds }}
{{- else if eq $name "REAP_IDLE_AFTER" }}{{ $value = $v.reap.idleAfter }}
{{- else if eq $name "REAP_MAX_STOPS" }}{{ $value = $v.reap.maxStops }}
{{- else if eq $name "REAP_EXEMPT" }}{{ with $v.reap.exempt }}{{ $value = join "," . }}{{ end }}
{{- else if eq $name "REAP_MAX_WORKSPACES_PER_USER" }}{{ $value = $v.reap.maxWorkspacesPerUser }}
{{- else if eq $name "REAP_MAX_RUNNING_PER_USER" }}{{ $value = $v.reap.maxRunningPerUser }}
{{- else if eq $name "REAP_QUOTA_ACTION" }}{{ $value = $v.reap.quotaAction }}
{{- else if eq $name "REAP_CONCURRENCY" }}{{ $value = $v.reap.concurrency }}
{{- else if eq $name "REAP_WORKSPACE_NAMESPACE" }}{{ $value = include "coder-jobs.reapNamespace" $root }}
{{- else if eq $name "REAP_RULES_FILE" }}{{ if $v.reap.rules }}{{ $value = "/etc/coder-jobs/reap/rules.yaml" }}{{ end }}
{{- /* Read by the jobs, left to their defaults by the chart; EXTERNAL_AUTH_ADOPT and
  REAP_DELETE_ORPHANS it sets as the flags --adopt and --delete-orphans (coder-jobs.args). */}}
{{- else if not (has $name (list "CODER_REQUEST_TIMEOUT" "REAP_PAGE_SIZE" "EXTERNAL_AUTH_ADOPT" "REAP_DELETE_ORPHANS")) }}
{{- fail (printf "coder-jobs.envVar (chart/templates/_helpers.tpl) has no value for %s, which chart/files/job-env.json says a job reads" $name) }}
{{- end }}
{{- if not (or (kindIs "invalid" $value) (eq (toString $value) "")) }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{- define "coder-jobs.env" -}}
{{- $root := index . 0 }}{{ $job := index . 1 }}
{{- range (include "coder-jobs.jobEnvNames" (list $root $job) | fromJsonArray) }}
{{- include "coder-jobs.envVar" (list $root .) }}
{{- end }}
{{- end }}

{{/*
Pod template of one job. Usage:
  include "coder-jobs.podTemplate" (list $ "<job>" <dryRun bool>)
*/}}
{{- define "coder-jobs.podTemplate" -}}
{{- $root := index . 0 }}{{ $job := index . 1 }}{{ $dryRun := index . 2 }}
{{- $v := $root.Values }}
{{- $kube := include "coder-jobs.usesKubernetes" (list $root $job) }}
{{- $usesTemplates := has "TEMPLATES_DIR" (include "coder-jobs.jobEnvNames" (list $root $job) | fromJsonArray) }}
metadata:
  labels:
    {{- include "coder-jobs.componentLabels" (list $root $job) | nindent 4 }}
    coder-jobs/kubernetes-api: {{ ternary "true" "false" (eq $kube "true") | quote }}
  annotations:
    kubectl.kubernetes.io/default-container: coder-jobs
    {{- if $usesTemplates }}
    checksum/templates: {{ include "coder-jobs.templatesChecksum" $root }}
    {{- end }}
    {{- if and (eq $job "reap") $v.reap.rules }}
    checksum/reap-rules: {{ toYaml $v.reap.rules | sha256sum }}
    {{- end }}
    {{- with $v.jobs.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "coder-jobs.componentName" (list $root $job) }}
  automountServiceAccountToken: {{ eq $kube "true" }}
  restartPolicy: Never
  enableServiceLinks: false
  securityContext:
    {{- include "coder-jobs.podSecurityContext" $root | nindent 4 }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- range . }}
    - name: {{ . }}
    {{- end }}
  {{- end }}
  {{- with $v.jobs.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $v.jobs.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.jobs.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.jobs.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: coder-jobs
      image: {{ include "coder-jobs.image" $root }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      args: {{ include "coder-jobs.args" (list $root $job $dryRun) }}
      env:
        {{- include "coder-jobs.env" (list $root $job) | nindent 8 }}
      resources:
        {{- toYaml $v.jobs.resources | nindent 8 }}
      securityContext:
        {{- include "coder-jobs.containerSecurityContext" $root | nindent 8 }}
      terminationMessagePolicy: FallbackToLogsOnError
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        {{- if $usesTemplates }}
        - name: templates
          mountPath: /templates
          readOnly: true
        {{- end }}
        {{- if and (eq $job "reap") $v.reap.rules }}
        - name: reap-rules
          mountPath: /etc/coder-jobs/reap
          readOnly: true
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: {{ $v.jobs.tmpSizeLimit }}
    {{- if $usesTemplates }}
    - name: templates
      projected:
        defaultMode: 0444
        sources:
          {{- $idx := fromJson (include "coder-jobs.templateIndex" $root) }}
          {{- range $name := $idx.names }}
          {{- with get $idx.external $name }}
          - configMap:
              name: {{ .configMap }}
              items:
                {{- range .files }}
                - key: {{ .key }}
                  path: {{ printf "%s/%s" $name .rel }}
                {{- end }}
          {{- else }}
          - configMap:
              name: {{ include "coder-jobs.componentName" (list $root (printf "template-%s" $name)) }}
              items:
                {{- range (get $idx.templates $name) }}
                - key: {{ .key }}
                  path: {{ printf "%s/%s" $name .rel }}
                {{- end }}
          {{- end }}
          {{- end }}
          {{- if $idx.shared }}
          - configMap:
              name: {{ include "coder-jobs.componentName" (list $root "templates-shared") }}
              items:
                {{- range $idx.shared }}
                - key: {{ .key }}
                  path: {{ .rel }}
                {{- end }}
          {{- end }}
    {{- end }}
    {{- if and (eq $job "reap") $v.reap.rules }}
    - name: reap-rules
      configMap:
        name: {{ include "coder-jobs.componentName" (list $root "reap-rules") }}
    {{- end }}
{{- end }}

{{/*
Job spec (without ttl). podFailurePolicy: exit code 2 means bad configuration - retrying cannot
help, so the Job fails at once (for doctor exit 1 too: it reports drift, read-only, and a retry
would only repeat the report); evictions do not count against backoffLimit.
onPodConditions[].status is written although it defaults to "True": up to Kubernetes 1.33 only a
Job's own defaulting fills it in (a CronJob's jobTemplate without it is rejected), and the rules
list is atomic for server-side apply, so a server-filled value would conflict with the chart's.
The same goes for fieldRef.apiVersion above (ObjectFieldSelector is an atomic struct).
*/}}
{{- define "coder-jobs.jobSpec" -}}
{{- $root := index . 0 }}{{ $job := index . 1 }}{{ $dryRun := index . 2 }}
backoffLimit: {{ $root.Values.jobs.backoffLimit }}
activeDeadlineSeconds: {{ include "coder-jobs.activeDeadline" (list $root $job) }}
podFailurePolicy:
  rules:
    - action: FailJob
      onExitCodes:
        containerName: coder-jobs
        operator: In
        {{- /* doctor's exit 1 is its finding (drift), not a failure a retry could heal */}}
        values: {{ ternary "[1, 2]" "[2]" (eq $job "doctor") }}
    - action: Ignore
      onPodConditions:
        - type: DisruptionTarget
          status: "True"
template:
  {{- include "coder-jobs.podTemplate" (list $root $job $dryRun) | nindent 2 }}
{{- end }}

{{/* ---------------------------------------------------------------- checks the jobs make too */}}

{{/*
Why a duration cannot be an idle-after, or nothing: jobs/durations.py parse_duration and
jobs/reap_rules.py idle_after_problem, step for step (the same float operations in the same order,
then whole microseconds as Python's timedelta keeps them), so both sides agree at the 5m edge.
The schema has checked the spelling already.
*/}}
{{- define "coder-jobs.idleAfterProblem" -}}
{{- $text := lower (trim (toString .)) }}
{{- $seconds := 0.0 }}
{{- if regexMatch "^[0-9]+(\\.[0-9]+)?$" $text }}
{{- $seconds = float64 $text }}
{{- else }}
{{- $units := dict "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 "d" 86400.0 "w" 604800.0 }}
{{- range regexFindAll "[0-9]+(\\.[0-9]+)?(ms|s|m|h|d|w)" $text -1 }}
{{- $unit := regexFind "(ms|s|m|h|d|w)$" . }}
{{- $seconds = addf $seconds (mulf (float64 (trimSuffix $unit .)) (get $units $unit)) }}
{{- end }}
{{- end }}
{{- if le $seconds 0.0 }}duration must be positive
{{- else if gt $seconds 315360000.0 }}duration is longer than ten years
{{- else if lt (round (mulf $seconds 1000000.0) 0) 300000000.0 }}shorter than 5m (coderd updates last_used_at only about once a minute, so workspaces in use would be stopped)
{{- end }}
{{- end }}
