package supervisor

import "testing"

func TestParseSlurmJob(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    slurmJob
		wantErr bool
	}{
		{
			name: "running",
			out:  "JobId=17 JobName=ckpt-plain UserId=ckpt-user(1001) JobState=RUNNING Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1\n",
			want: slurmJob{State: "RUNNING", Reason: "None"},
		},
		{
			name: "time limit",
			out:  "JobId=21 JobState=COMPLETING Reason=TimeLimit Restarts=2",
			want: slurmJob{State: "COMPLETING", Reason: "TimeLimit", Restarts: 2},
		},
		{name: "no state", out: "slurm_load_jobs error: Invalid job id specified", wantErr: true},
		{name: "bad restarts", out: "JobState=RUNNING Restarts=x", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSlurmJob(tt.out)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseSlurmJob: err %v, want error %v", err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Errorf("parseSlurmJob = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDecideRequeue(t *testing.T) {
	tests := []struct {
		name     string
		job      slurmJob
		restarts int
		want     requeueAction
	}{
		{"--signal warning or scancel --batch", slurmJob{"RUNNING", "None", 0}, 0, requeueAsk},
		{"running after two requeues", slurmJob{"RUNNING", "None", 2}, 2, requeueAsk},
		{"time limit", slurmJob{"COMPLETING", "TimeLimit", 0}, 0, requeueAsk},
		{"scancel", slurmJob{"COMPLETING", "None", 0}, 0, requeueNotWanted},
		{"scancel after a requeue", slurmJob{"COMPLETING", "None", 1}, 1, requeueNotWanted},
		{"preempted and requeued", slurmJob{"COMPLETING", "None", 1}, 0, requeueBySlurm},
		{"scontrol requeue", slurmJob{"PENDING", "BeginTime", 3}, 2, requeueBySlurm},
		{"requeue hold", slurmJob{"REQUEUE_HOLD", "JobHeldAdmin", 0}, 0, requeueBySlurm},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := decideRequeue(tt.job, tt.restarts); got != tt.want {
				t.Errorf("decideRequeue(%+v, %d) = %v, want %v", tt.job, tt.restarts, got, tt.want)
			}
		})
	}
}

func TestExternalPMI(t *testing.T) {
	tests := []struct {
		env  []string
		want string
	}{
		{[]string{"PATH=/bin", "SLURM_JOB_ID=5"}, ""},
		{[]string{"PMIX_SERVER_URI41=pmix-server.123;tcp4://127.0.0.1:40000"}, "PMIX_SERVER_URI41"},
		{[]string{"PMI_FD=5", "PMI_RANK=0"}, "PMI_FD"},
		{[]string{"PMIX_SERVER_URIX=1"}, ""},
	}
	for _, tt := range tests {
		if got := externalPMI(tt.env); got != tt.want {
			t.Errorf("externalPMI(%q) = %q, want %q", tt.env, got, tt.want)
		}
	}
}
