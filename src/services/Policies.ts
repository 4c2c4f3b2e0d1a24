/**
 * The maintainer's three requests (seed 000), each a built-in default replaceable by a handler of the same type:
 *
 * - `resolve` (provide): an identifier (`owner/name`, `owner/name@^1.2`, seed 000's `owner/name>3.1`) → a release.
 *   Default: the highest sealed version that matches (`Registry.match`). A handler answers
 *   `payload.data = {"name","version","hash"}` (status `ok`) or `null` (status `not-found`).
 * - `propose` (take): a verified, pushed, unsealed release → accepted / queued / rejected. Default: the
 *   ProposalPolicy underneath (accept what the Verifier let through). A handler answers
 *   `payload.data = {"decision":"accepted"|"queued"|"rejected","message"?,"reason"?}` (or says it in
 *   `header.status`); the push flow acts on the decision (seals, or records a queued release under
 *   `refs/upm/queue/…` for the ProposalQueue). A handler that fails rejects, with the reason.
 * - `sync` (from a peer): a peer announces a release. Default: log and accept (the peers issue replaces the default
 *   with fetching). A handler answers `payload.data = {"decision":"accept"|"refuse","reason"?}`.
 *
 * Also here: `PeerLink` (sending to peers, for `sendServers`) and `PeerCredentials` (who may speak with
 * `scope: "server"`), with minimal layers until the peers issue provides real ones.
 */
import { createHash, timingSafeEqual } from "node:crypto"
import { Context, Effect, Either, Layer, Option, Schema } from "effect"
import { ObjectHash } from "../domain/ObjectHash.js"
import { parseIdentifier, PackageName, releaseTagName, Version } from "../domain/Package.js"
import { ConversationHub } from "./Conversations.js"
import { Handlers } from "./Handlers.js"
import { type Decision, ProposalPolicy } from "./ProposalPolicy.js"
import { Registry, Release } from "./Registry.js"
import type { StoreError } from "./ObjectStore.js"

// ---------------------------------------------------------------------------------------------
// resolve

export class ResolveError extends Schema.TaggedError<ResolveError>()("ResolveError", {
  reason: Schema.Literal("BadIdentifier", "Handler"),
  detail: Schema.String
}) {
  override get message() {
    return this.detail
  }
}

export class ResolvePolicy extends Context.Tag("upm/ResolvePolicy")<ResolvePolicy, {
  readonly resolve: (identifier: string, user: string | undefined) => Effect.Effect<Option.Option<Release>, ResolveError | StoreError>
}>() {}

const resolveDefault = (registry: Registry["Type"]) => (identifier: string) =>
  Either.match(parseIdentifier(identifier), {
    onLeft: (e) => Effect.fail(new ResolveError({ reason: "BadIdentifier", detail: `"${identifier}": ${e.detail}` })),
    onRight: ({ name, range }) => registry.match(name, range)
  })

const ResolvedRelease = Schema.NullOr(Schema.Struct({ name: PackageName, version: Version, hash: ObjectHash }))

/** `resolve` by the handler of that type when configured, else `Registry.match`. */
export const layerResolve: Layer.Layer<ResolvePolicy, never, Registry | Handlers> = Layer.effect(
  ResolvePolicy,
  Effect.gen(function* () {
    const registry = yield* Registry
    const handlers = yield* Handlers
    const fallback = resolveDefault(registry)
    return ResolvePolicy.of({
      resolve: (identifier, user) =>
        Option.isNone(handlers.spec("resolve"))
          ? fallback(identifier)
          : handlers.call({ type: "resolve", scope: "client", data: { identifier }, user }).pipe(
            Effect.mapError((e) => new ResolveError({ reason: "Handler", detail: e.message })),
            Effect.flatMap((reply) =>
              Schema.decodeUnknown(ResolvedRelease)(reply.payload.data).pipe(
                Effect.mapError((e) => new ResolveError({ reason: "Handler", detail: `resolve handler replied nonsense: ${e.message}` }))
              )),
            Effect.map((r) => Option.map(Option.fromNullable(r), (r) => new Release(r)))
          )
    })
  })
)

// ---------------------------------------------------------------------------------------------
// propose

const ProposeAnswer = Schema.Struct({
  decision: Schema.optional(Schema.Literal("accepted", "queued", "rejected")),
  message: Schema.optional(Schema.String.pipe(Schema.maxLength(4096))),
  reason: Schema.optional(Schema.String.pipe(Schema.maxLength(4096)))
})

/** Reads a propose handler's reply: `payload.data.decision`, or `header.status` naming a decision. */
export const decisionOf = (status: string, data: unknown): Decision => {
  const answer = Schema.decodeUnknownOption(ProposeAnswer)(data ?? {})
  const fields = Option.getOrElse(answer, () => ({} as typeof ProposeAnswer.Type))
  const decision = fields.decision ?? (["accepted", "queued", "rejected"].includes(status) ? status : undefined)
  const text = fields.message ?? fields.reason
  switch (decision) {
    case "accepted":
      return { _tag: "Accepted" }
    case "queued":
      return { _tag: "Queued", message: text ?? "queued for a maintainer" }
    case "rejected":
      return { _tag: "Rejected", reason: text ?? "rejected by the server's policy" }
    default:
      return { _tag: "Rejected", reason: `the propose handler gave no decision (status "${status}")` }
  }
}

/**
 * ProposalPolicy that asks the `propose` handler when one is configured (with a conversation handle, when the
 * publisher attached a message session), and the ProposalPolicy underneath otherwise.
 */
export const layerProposalHandler: Layer.Layer<ProposalPolicy, never, ProposalPolicy | Handlers | ConversationHub> =
  Layer.effect(
    ProposalPolicy,
    Effect.gen(function* () {
      const fallback = yield* ProposalPolicy
      const handlers = yield* Handlers
      const hub = yield* ConversationHub
      return ProposalPolicy.of({
        propose: (release, conversation) =>
          Option.isNone(handlers.spec("propose"))
            ? fallback.propose(release, conversation)
            : Effect.scoped(Effect.gen(function* () {
              const handle = conversation === undefined ? undefined : yield* hub.handle(conversation)
              const reply = yield* handlers.call({
                type: "propose",
                scope: "client",
                data: {
                  name: release.name,
                  version: release.version,
                  tag: release.tagHash,
                  tree: release.tree,
                  signer: release.signer,
                  ...(release.publicKey !== undefined ? { publicKey: release.publicKey } : {})
                },
                handle
              })
              return decisionOf(reply.header.status, reply.payload.data)
            })).pipe(
              Effect.catchAll((e): Effect.Effect<Decision> => Effect.succeed({ _tag: "Rejected", reason: e.message })),
              Effect.tap((d) => Effect.logInfo(`propose ${releaseTagName(release.name, release.version)}: ${d._tag}`))
            )
      })
    })
  )

// ---------------------------------------------------------------------------------------------
// sync

export const Announcement = Schema.Struct({ name: PackageName, version: Version, hash: ObjectHash })
export type Announcement = typeof Announcement.Type

export const SyncDecision = Schema.Union(
  Schema.TaggedStruct("Accept", {}),
  Schema.TaggedStruct("Refuse", { reason: Schema.String })
)
export type SyncDecision = typeof SyncDecision.Type

export class SyncPolicy extends Context.Tag("upm/SyncPolicy")<SyncPolicy, {
  /** A peer announced a release: what to do. */
  readonly announce: (peer: string, release: Announcement) => Effect.Effect<SyncDecision>
}>() {}

/** The placeholder default until the peers issue fetches: log the announcement and accept it. */
export const layerSyncLogAccept = Layer.succeed(SyncPolicy, SyncPolicy.of({
  announce: (peer, release) =>
    Effect.as(Effect.logInfo(`sync: ${peer} announced ${releaseTagName(release.name, release.version)} ${release.hash}`), {
      _tag: "Accept" as const
    })
}))

const SyncAnswer = Schema.Struct({
  decision: Schema.Literal("accept", "refuse"),
  reason: Schema.optional(Schema.String.pipe(Schema.maxLength(4096)))
})

/** The `sync` handler decides when configured (a refusal skips the policy underneath); else the policy underneath. */
export const layerSyncHandler: Layer.Layer<SyncPolicy, never, SyncPolicy | Handlers> = Layer.effect(
  SyncPolicy,
  Effect.gen(function* () {
    const fallback = yield* SyncPolicy
    const handlers = yield* Handlers
    return SyncPolicy.of({
      announce: (peer, release) =>
        Option.isNone(handlers.spec("sync"))
          ? fallback.announce(peer, release)
          : handlers.call({ type: "sync", scope: "server", data: release, peer }).pipe(
            Effect.flatMap((reply) => Schema.decodeUnknown(SyncAnswer)(reply.payload.data)),
            Effect.matchEffect({
              onFailure: (e) => Effect.succeed<SyncDecision>({ _tag: "Refuse", reason: `sync handler: ${e.message}` }),
              onSuccess: (a) =>
                a.decision === "accept"
                  ? fallback.announce(peer, release)
                  : Effect.succeed<SyncDecision>({ _tag: "Refuse", reason: a.reason ?? "refused by the sync handler" })
            })
          )
    })
  })
)

// ---------------------------------------------------------------------------------------------
// Peers: sending (sendServers) and proving who they are (scope "server")

export interface PeerDelivery {
  readonly peer: string
  readonly delivered: boolean
  readonly detail?: string
}

export class PeerLink extends Context.Tag("upm/PeerLink")<PeerLink, {
  /** Sends a message to the named peers, or to all. */
  readonly send: (
    peers: "all" | ReadonlyArray<string>,
    message: { readonly type: string; readonly status: string; readonly data: unknown }
  ) => Effect.Effect<ReadonlyArray<PeerDelivery>>
}>() {}

/** No peer connections yet: logs what would be sent and reports it undelivered. */
export const layerPeerLinkLog = Layer.succeed(PeerLink, PeerLink.of({
  send: (peers, message) =>
    Effect.as(
      Effect.logInfo(`sendServers to ${peers === "all" ? "all peers" : peers.join(", ")}: ${message.type} (no peer links configured)`),
      peers === "all" ? [] : peers.map((peer) => ({ peer, delivered: false, detail: "no peer links configured" }))
    )
}))

export class PeerCredentials extends Context.Tag("upm/PeerCredentials")<PeerCredentials, {
  /** Whether `secret` is the shared secret configured for peer `name` (constant time). */
  readonly verify: (name: string, secret: string) => Effect.Effect<boolean>
}>() {}

const digest = (s: string) => createHash("sha256").update(s, "utf8").digest()

/** Peers from the config: name → shared secret. Secrets are compared as SHA-256 digests, in constant time. */
export const layerPeerSecrets = (secrets: Readonly<Record<string, string>>) =>
  Layer.succeed(PeerCredentials, PeerCredentials.of({
    verify: (name, secret) =>
      Effect.sync(() => {
        const expected = Object.hasOwn(secrets, name) ? secrets[name] : undefined
        // Compare even for unknown names, so timing does not tell which peers exist.
        const ok = timingSafeEqual(digest(expected ?? "\u0000unknown-peer"), digest(secret))
        return expected !== undefined && ok
      })
  }))
