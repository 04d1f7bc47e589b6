// The few Next.js types the example uses, so it type-checks without
// installing next. Real apps get them from the next package.
declare module "next/server" {
  export class NextRequest extends Request {
    readonly nextUrl: URL;
  }
}
