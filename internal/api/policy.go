package api

import "github.com/gust-run/gust/internal/auth"

// access is who may call a route.
type access int

const (
	anyUser    access = iota // any user token, read-only included, and any worker or container that the rule lets in
	memberOnly               // a member or an owner
	ownerOnly                // an owner: tokens, secrets, the audit log
	adminOnly                // the operator: workspaces, quotas, pruning the shared image cache
	workerOnly               // a worker's own credential, for its own worker ID
	joinOnly                 // the join token: registering a worker
)

// rule is a route's policy. container lets function containers' credentials call the route
// (the allowlist); the handler then limits them to the sandboxes and calls they made.
type rule struct {
	need      access
	container bool
}

// policy holds every route's rule, in one place to read and test. A route missing here
// makes router.handle panic at start-up.
var policy = map[string]rule{
	"GET /v1/health": {anyUser, true}, // served before authentication: open to all
	"GET /v1/whoami": {anyUser, true},

	// Sandboxes: a container may manage the sandboxes it made.
	"POST /v1/sandboxes":                         {memberOnly, true},
	"GET /v1/sandboxes":                          {anyUser, true},
	"GET /v1/sandboxes/{id}":                     {anyUser, true},
	"POST /v1/sandboxes/{id}/terminate":          {memberOnly, true},
	"PUT /v1/sandboxes/{id}/tags":                {memberOnly, true},
	"POST /v1/sandboxes/{id}/snapshot":           {memberOnly, false},
	"PUT /v1/sandboxes/{id}/network":             {memberOnly, true},
	"POST /v1/sandboxes/{id}/execs":              {memberOnly, true},
	"GET /v1/sandboxes/{id}/execs/{eid}/output":  {memberOnly, true},
	"GET /v1/sandboxes/{id}/execs/{eid}":         {anyUser, true},
	"POST /v1/sandboxes/{id}/execs/{eid}/stdin":  {memberOnly, true},
	"POST /v1/sandboxes/{id}/execs/{eid}/signal": {memberOnly, true},
	"POST /v1/sandboxes/{id}/execs/{eid}/resize": {memberOnly, true},
	"GET /v1/sandboxes/{id}/logs":                {anyUser, true},
	"GET /v1/sandboxes/{id}/files":               {memberOnly, true},
	"PUT /v1/sandboxes/{id}/files":               {memberOnly, true},
	"DELETE /v1/sandboxes/{id}/files":            {memberOnly, true},
	"GET /v1/sandboxes/{id}/files/list":          {memberOnly, true},
	"GET /v1/sandboxes/{id}/files/stat":          {memberOnly, true},
	"POST /v1/sandboxes/{id}/files/mkdir":        {memberOnly, true},
	// Tunnels: a function container opens and closes its own (modal.forward).
	"GET /v1/sandboxes/{id}/tunnels":              {anyUser, true},
	"POST /v1/sandboxes/{id}/tunnels":             {memberOnly, true},
	"DELETE /v1/sandboxes/{id}/tunnels/{port}":    {memberOnly, true},
	"GET /v1/sandboxes/{id}/ready":                {anyUser, true},
	"POST /v1/images":                             {memberOnly, true}, // containers: built images only (handleImageCreate)
	"GET /v1/images":                              {anyUser, false},
	"GET /v1/images/{id}":                         {anyUser, true},
	"DELETE /v1/images/{id}":                      {memberOnly, false},
	"DELETE /v1/images":                           {adminOnly, false},
	"POST /v1/blobs":                              {memberOnly, false},
	"GET /v1/blobs/{sum}":                         {anyUser, false},
	"POST /v1/apps/lookup":                        {anyUser, true}, // creating needs a member (handleAppLookup)
	"GET /v1/apps":                                {anyUser, false},
	"POST /v1/apps/publish":                       {memberOnly, false},
	"GET /v1/apps/{id}":                           {anyUser, true}, // the SDK in a container finds its app's functions
	"POST /v1/apps/{id}/stop":                     {memberOnly, false},
	"POST /v1/apps/{id}/heartbeat":                {memberOnly, false},
	"GET /v1/apps/{id}/logs":                      {anyUser, false},
	"POST /v1/functions/lookup":                   {anyUser, true},
	"GET /v1/functions/{id}":                      {anyUser, true},
	"POST /v1/functions/{id}/autoscaler":          {memberOnly, false},
	"POST /v1/functions/{id}/variants":            {memberOnly, true}, // with_options, also from inside a function
	"POST /v1/functions/{id}/calls":               {memberOnly, true},
	"POST /v1/calls/{id}/inputs":                  {memberOnly, true},
	"GET /v1/calls/{id}/stream":                   {anyUser, true},
	"GET /v1/calls/{id}":                          {anyUser, true},
	"POST /v1/calls/{id}/cancel":                  {memberOnly, true},
	"POST /v1/secrets":                            {ownerOnly, false},
	"GET /v1/secrets":                             {anyUser, false},
	"POST /v1/secrets/lookup":                     {anyUser, false},
	"DELETE /v1/secrets/{name}":                   {ownerOnly, false},
	"POST /v1/volumes":                            {memberOnly, true},
	"POST /v1/volumes/lookup":                     {anyUser, true}, // creating needs a member (handleVolumeLookup)
	"GET /v1/volumes":                             {anyUser, true},
	"GET /v1/volumes/{id}":                        {anyUser, true},
	"DELETE /v1/volumes/{id}":                     {memberOnly, true},
	"POST /v1/volumes/{id}/heartbeat":             {anyUser, true},
	"PUT /v1/volumes/{id}/name":                   {memberOnly, true},
	"GET /v1/volumes/{id}/entries":                {anyUser, true},
	"GET /v1/volumes/{id}/content":                {anyUser, true},
	"POST /v1/volumes/{id}/blobs":                 {memberOnly, true},
	"POST /v1/volumes/{id}/commit":                {memberOnly, true},
	"POST /v1/volumes/{id}/remove":                {memberOnly, true},
	"POST /v1/volumes/{id}/copy":                  {memberOnly, true},
	"GET /v1/workers/{wid}/volumes/{vid}":         {workerOnly, false},
	"POST /v1/workers/{wid}/volumes/{vid}/commit": {workerOnly, false},
	"POST /v1/sandboxes/{id}/volumes/reload":      {memberOnly, true},
	"POST /v1/dicts":                              {memberOnly, true},
	"POST /v1/dicts/lookup":                       {anyUser, true}, // creating needs a member (handleDictLookup)
	"GET /v1/dicts":                               {anyUser, true},
	"GET /v1/dicts/{id}":                          {anyUser, true},
	"DELETE /v1/dicts/{id}":                       {memberOnly, true},
	"POST /v1/dicts/{id}/heartbeat":               {anyUser, true},
	"POST /v1/dicts/{id}/clear":                   {memberOnly, true},
	"GET /v1/dicts/{id}/len":                      {anyUser, true},
	"POST /v1/dicts/{id}/entries":                 {memberOnly, true},
	"GET /v1/dicts/{id}/entries":                  {anyUser, true},
	"GET /v1/dicts/{id}/entries/{key}":            {anyUser, true},
	"DELETE /v1/dicts/{id}/entries/{key}":         {memberOnly, true},
	"POST /v1/queues":                             {memberOnly, true},
	"POST /v1/queues/lookup":                      {anyUser, true}, // creating needs a member (handleQueueLookup)
	"GET /v1/queues":                              {anyUser, true},
	"GET /v1/queues/{id}":                         {anyUser, true},
	"DELETE /v1/queues/{id}":                      {memberOnly, true},
	"POST /v1/queues/{id}/heartbeat":              {anyUser, true},
	"POST /v1/queues/{id}/put":                    {memberOnly, true},
	"POST /v1/queues/{id}/get":                    {memberOnly, true},
	"GET /v1/queues/{id}/len":                     {anyUser, true},
	"POST /v1/queues/{id}/clear":                  {memberOnly, true},
	"GET /v1/queues/{id}/items":                   {anyUser, true},
	"POST /v1/tokens":                             {ownerOnly, false},
	"GET /v1/tokens":                              {ownerOnly, false},
	"DELETE /v1/tokens/{id}":                      {ownerOnly, false},
	"POST /v1/workspaces":                         {adminOnly, false},
	"GET /v1/workspaces":                          {anyUser, false},
	"GET /v1/workspaces/{id}/quotas":              {anyUser, false},
	"PUT /v1/workspaces/{id}/quotas":              {adminOnly, false},
	"GET /v1/audit":                               {ownerOnly, false},
	"GET /v1/workers":                             {anyUser, false},
	"POST /v1/workers/register":                   {joinOnly, false},
	"POST /v1/workers/{wid}/events":               {workerOnly, false},
	"GET /v1/workers/{wid}/assignments":           {workerOnly, false},
	"POST /v1/workers/{wid}/sandboxes/{id}/state": {workerOnly, false},

	// The usage ledger (billing.go): workers report; any user of a workspace reads its costs;
	// a container may read the cost of the sandboxes it made, to stop a runaway.
	"POST /v1/workers/{wid}/usage":    {workerOnly, false},
	"GET /v1/billing/rates":           {anyUser, false},
	"GET /v1/billing/report":          {anyUser, false},
	"GET /v1/billing/advise":          {anyUser, false},
	"GET /v1/usage":                   {anyUser, false},
	"GET /v1/sandboxes/{id}/usage":    {anyUser, true},
	"GET /v1/apps/{id}/usage":         {anyUser, false},
	"GET /v1/apps/{id}/tags":          {anyUser, true},
	"PUT /v1/apps/{id}/tags":          {memberOnly, false},
	"POST /v1/billing/budgets":        {ownerOnly, false},
	"GET /v1/billing/budgets":         {anyUser, false},
	"DELETE /v1/billing/budgets/{id}": {ownerOnly, false},
	"GET /v1/metrics":                 {adminOnly, false}, // the operator's Prometheus metrics
}

// allows reports whether p may call a route with rule ru; wid is the route's worker ID, if any.
func (ru rule) allows(p auth.Principal, wid string) bool {
	switch p.Kind {
	case auth.Joiner:
		return ru.need == joinOnly
	case auth.Worker:
		return ru.need == workerOnly && p.WorkerID == wid && wid != ""
	case auth.Container:
		return ru.container && ru.need <= memberOnly
	case auth.User:
		switch ru.need {
		case anyUser:
			return p.Role.AtLeast(auth.ReadOnly)
		case memberOnly:
			return p.Role.AtLeast(auth.Member)
		case ownerOnly:
			return p.Role.AtLeast(auth.Owner)
		case adminOnly:
			return p.Admin
		}
	}
	return false
}
