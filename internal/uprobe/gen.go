package uprobe

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type obs_status -type obs_err_kind -type obs_err_mode -type obs_phase -type obs_limits -type obs_gslot_mark -type call_event -type err_event -type errtext_event -type errtext_node -type errtext_field -type errtext_seg -type errtext_kind -type errtext_limit -type errtext_flag -type func_info -type func_stats -type counters -type gkey -type gstate -type fkey -type gslot -type frame obs ../../bpf/obs.c -- -I../../bpf -O2 -g -Wall -Werror -mcpu=v3
